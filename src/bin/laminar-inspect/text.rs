//! Text for people: keys and values escaped (or hex), sizes, tables.

use std::fmt::Write as _;
use std::io::{self, Write};

/// `bytes` as printable ASCII: `\\`, `\"`, `\n`, `\t`, `\r`, `\'` and
/// `\xNN` for the rest (Rust's byte escapes; [`unescape`] reads them back).
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        for c in std::ascii::escape_default(b) {
            s.push(c as char);
        }
    }
    s
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A key or value as `--hex` asks.
pub(crate) fn bytes(b: &[u8], as_hex: bool) -> String {
    if as_hex { hex(b) } else { escape(b) }
}

/// Reads back what [`escape`] writes (and any other UTF-8 text as is).
pub(crate) fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('r') => out.push(b'\r'),
            Some('0') => out.push(0),
            Some(c @ ('\\' | '"' | '\'')) => out.push(c as u8),
            Some('x') => {
                let digits: String = chars.by_ref().take(2).collect();
                let byte = u8::from_str_radix(&digits, 16)
                    .ok()
                    .filter(|_| digits.len() == 2)
                    .ok_or_else(|| format!("`\\x{digits}` in `{s}` is not two hex digits"))?;
                out.push(byte);
            }
            other => {
                return Err(format!(
                    "`\\{}` in `{s}` is not an escape (\\\\, \\\", \\n, \\t, \\r, \\0, \\xNN)",
                    other.map(String::from).unwrap_or_default()
                ));
            }
        }
    }
    Ok(out)
}

/// Reads hex digits (an even number of them).
pub(crate) fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err(format!("`{s}` is not hex (an even number of hex digits)"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("`{s}` is not hex")))
        .collect()
}

/// A byte count for people: `512 B`, `1.5 KiB`, `24.3 MiB`.
pub(crate) fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// An optional value, `-` when absent.
pub(crate) fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A range `a..=b` as `a..b` (`a` alone when equal, `-` when absent).
pub(crate) fn span(r: Option<(u64, u64)>) -> String {
    match r {
        None => "-".to_string(),
        Some((a, b)) if a == b => a.to_string(),
        Some((a, b)) => format!("{a}..{b}"),
    }
}

/// A column of a [`Table`]: its header and how its cells line up.
pub(crate) struct Column {
    header: &'static str,
    right: bool,
}

/// A column of numbers (and `-`), lined up on the right.
pub(crate) fn right(header: &'static str) -> Column {
    Column { header, right: true }
}

/// A column of text, lined up on the left.
pub(crate) fn left(header: &'static str) -> Column {
    Column { header, right: false }
}

/// A table printed with aligned columns, each lined up as it says (never
/// as its cells happen to look, so a column keeps its layout from one
/// listing to the next).
pub(crate) struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(columns: impl IntoIterator<Item = Column>) -> Self {
        Self {
            columns: columns.into_iter().collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let cols = self.columns.len();
        let mut width: Vec<usize> = self.columns.iter().map(|c| c.header.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                width[i] = width[i].max(cell.chars().count());
            }
        }
        let line = |out: &mut dyn Write, cells: &[String]| -> io::Result<()> {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate().take(cols) {
                let pad = width[i].saturating_sub(cell.chars().count());
                let last = i + 1 == cols;
                if self.columns[i].right {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    if !last {
                        s.push_str(&" ".repeat(pad));
                    }
                }
                if !last {
                    s.push_str("  ");
                }
            }
            writeln!(out, "{}", s.trim_end())
        };
        let header: Vec<String> = self.columns.iter().map(|c| c.header.to_string()).collect();
        line(out, &header)?;
        for row in &self.rows {
            line(out, row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(table: &Table) -> String {
        let mut out = Vec::new();
        table.print(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A column is laid out as declared, whatever its cells look like: a
    /// checksum column does not move right when every checksum happens
    /// to start with a digit.
    #[test]
    fn columns_keep_their_alignment_whatever_the_cells() {
        let table = |crcs: [&str; 2]| {
            let mut t = Table::new([right("entries"), left("crc32"), left("file")]);
            for (i, crc) in crcs.into_iter().enumerate() {
                t.row(vec![(9 + i * 991).to_string(), crc.to_string(), format!("f{i}")]);
            }
            printed(&t)
        };
        assert_eq!(
            table(["1c8b582c", "0a29b89d"]),
            "entries  crc32     file\n      9  1c8b582c  f0\n   1000  0a29b89d  f1\n"
        );
        assert_eq!(
            table(["be1931ff", "0a29b89d"]),
            "entries  crc32     file\n      9  be1931ff  f0\n   1000  0a29b89d  f1\n"
        );
        // A number column holding a word lines it up on the right too.
        let mut t = Table::new([right("written"), left("sealed")]);
        t.row(vec!["8.0 MiB".to_string(), "yes".to_string()]);
        t.row(vec!["unreadable".to_string(), "no".to_string()]);
        assert_eq!(
            printed(&t),
            "   written  sealed\n   8.0 MiB  yes\nunreadable  no\n"
        );
    }
}
