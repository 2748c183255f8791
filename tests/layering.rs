//! The module graph, checked mechanically: each layer of `src/` imports only
//! the layers below it, and no two files depend on each other in a cycle.
//!
//! The test reads every `src/**/*.rs`, drops comments, string and character
//! literals and every item under `#[cfg(test)]` (test code may reach
//! anywhere), and collects the paths it names that start with `crate::` or
//! `super::`. Each path is resolved to the module file it reaches into (the
//! longest prefix that is a file), which gives a graph of files. Two checks
//! run on it:
//!
//! 1. **Layers.** The top-level modules are ranked in [`LAYERS`], lowest
//!    first; a file may reference its own top-level module and those ranked
//!    below it, never one above. Modules outside [`LAYERS`] fail the test,
//!    so a new module must be placed in the order.
//! 2. **Cycles.** No cycle among files, inside a layer included. A module's
//!    references to its own submodules (`mod.rs` re-exporting its files) are
//!    containment, not dependencies, and are not edges.
//!
//! [`KNOWN_EXCEPTIONS`] lists edges that break a rule today, each with the
//! reason and the work that removes it; an exception that no longer occurs
//! fails the test too, so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The layers of `src/`, lowest first. A module imports only modules in the
/// same layer (its own) or in earlier ones.
const LAYERS: &[&[&str]] = &[
    // Primitives: the loom shim, the crate's errors, the byte codec.
    &["sync"],
    &["error"],
    &["coding"],
    // The I/O seam (files, locks, stored files).
    &["io"],
    // Ring 0: the changelog ring and the epoch-commit payload it carries,
    // Ring 1's status as Ring 0 watches it, and the state store.
    &["changelog"],
    &["status"],
    &["state"],
    // On-disk formats and their readers and writers.
    &["wal"],
    &["checkpoint"],
    // Opening state: recovery, read-only inspection built on it, then the
    // manager that runs Rings 1, the checkpoint task and the scheduler that
    // drives it.
    &["recovery"],
    &["inspect"],
    &["manager"],
    // Entry points that may see everything: the public facade, the fuzz
    // entry points and the test doubles.
    &["incremental", "fuzzing", "testing"],
    // The `laminar-inspect` binary (`src/bin/`): a crate of its own that
    // sees the library only through its public API.
    &["bin"],
];

/// Edges that break a rule today: (from file, to file, why and what removes
/// it). Paths are relative to `src/`.
const KNOWN_EXCEPTIONS: &[(&str, &str, &str)] = &[];

/// One file of `src/` as a module path (`state/writer.rs` is
/// `["state", "writer"]`, `state/mod.rs` is `["state"]`, `lib.rs` is `[]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
    if stem != "mod" && stem != "lib" {
        parts.push(stem);
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `src` with comments and the contents of string and character literals
/// replaced by spaces (newlines kept, so line numbers still match).
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r' && (next == Some(b'"') || next == Some(b'#')) && !prev_is_ident(b, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.resize(out.len() + (j + 1 - i), b' ');
            i = j + 1;
            while i < b.len() {
                if b[i] == b'"' && b[i + 1..].iter().take(hashes).filter(|&&h| h == b'#').count() == hashes {
                    out.resize(out.len() + 1 + hashes, b' ');
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime.
            let end = if next == Some(b'\\') {
                b[i + 2..].iter().position(|&x| x == b'\'').map(|p| i + 2 + p)
            } else {
                let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 1 + ch_len)
            };
            match end {
                Some(end) => {
                    out.resize(out.len() + (end + 1 - i), b' ');
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).expect("stripping keeps UTF-8 outside literals")
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// `code` (already stripped) with every item under `#[cfg(test)]` blanked:
/// from the attribute to the item's `;` or its closing brace.
fn without_test_items(code: &str) -> String {
    let mut b = code.as_bytes().to_vec();
    let needle = b"#[cfg(test)]";
    let mut from = 0;
    while let Some(at) = find(&b, needle, from) {
        let mut i = at + needle.len();
        let mut depth = 0usize;
        while i < b.len() {
            match b[i] {
                b'{' => depth += 1,
                // The end of the enclosing item: the test item was a field
                // or an arm.
                b'}' if depth == 0 => break,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        for x in &mut b[at..i.min(code.len())] {
            if *x != b'\n' {
                *x = b' ';
            }
        }
        from = i;
    }
    String::from_utf8(b).expect("blanking keeps UTF-8")
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The paths `code` names after `crate::` or `super::` (each a list of
/// segments, `super` kept), with their line numbers. A group
/// (`crate::{a::X, b::{Y, Z}}`) gives one path per member.
fn referenced_paths(code: &str) -> Vec<(Vec<String>, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    for root in ["crate", "super"] {
        let mut from = 0;
        while let Some(at) = find(b, root.as_bytes(), from) {
            from = at + root.len();
            let bounded = (at == 0 || !is_ident_byte(b[at - 1]) && b[at - 1] != b':' && b[at - 1] != b'$')
                && !b.get(from).copied().is_some_and(is_ident_byte);
            if !bounded || b.get(from..from + 2) != Some(b"::") {
                continue;
            }
            // `super::super::x` is read once, from its first `super`.
            if root == "super" && at >= 7 && &b[at - 7..at] == b"super::" {
                continue;
            }
            let line = code[..at].matches('\n').count() + 1;
            let mut paths = Vec::new();
            parse_tail(b, at, &mut Vec::new(), &mut paths);
            out.extend(paths.into_iter().map(|p| (p, line)));
        }
    }
    out
}

/// Reads a path starting at `i` (`a::b::{c, d::e}`), appending to `prefix`;
/// every complete path goes to `out`.
fn parse_tail(b: &[u8], mut i: usize, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let start_len = prefix.len();
    loop {
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            // A group: each member continues the prefix.
            i += 1;
            loop {
                while b.get(i).is_some_and(|c| c.is_ascii_whitespace() || *c == b',') {
                    i += 1;
                }
                if b.get(i).is_none_or(|c| *c == b'}') {
                    break;
                }
                let mut member = prefix.clone();
                let mut sub = Vec::new();
                let end = member_end(b, i);
                parse_tail(&b[..end], i, &mut member, &mut sub);
                out.extend(sub);
                i = end;
            }
            prefix.truncate(start_len);
            return;
        }
        let s = i;
        while b.get(i).copied().is_some_and(is_ident_byte) {
            i += 1;
        }
        if s == i {
            break;
        }
        prefix.push(String::from_utf8_lossy(&b[s..i]).into_owned());
        if b.get(i..i + 2) == Some(b"::") {
            i += 2;
        } else {
            break;
        }
    }
    if !prefix.is_empty() {
        out.push(prefix.clone());
    }
    prefix.truncate(start_len);
}

/// The end of the group member starting at `i`: the next `,` or `}` at its
/// own depth.
fn member_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' if depth == 0 => return i,
            b'}' => depth -= 1,
            b',' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    i
}

/// The file a path from module `here` reaches into: the longest prefix of
/// its absolute module path that is a file.
fn resolve(
    here: &[String],
    is_mod_file: bool,
    path: &[String],
    files: &BTreeSet<Vec<String>>,
) -> Vec<String> {
    let mut abs: Vec<String>;
    let mut rest = path;
    if rest.first().is_some_and(|s| s == "crate") {
        abs = Vec::new();
        rest = &rest[1..];
    } else {
        // `super` in `a/b.rs` (module a::b) is `a`; in `a/b/mod.rs` also `a`.
        abs = here.to_vec();
        let _ = is_mod_file;
        while rest.first().is_some_and(|s| s == "super") {
            abs.pop();
            rest = &rest[1..];
        }
    }
    abs.extend(rest.iter().cloned());
    while !abs.is_empty() && !files.contains(&abs) {
        abs.pop();
    }
    abs
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "lib".to_owned()
    } else {
        m.join("::")
    }
}

struct Graph {
    /// Every module file, by module path, with its path under `src/`.
    files: BTreeMap<Vec<String>, PathBuf>,
    /// (from, to) -> the first line of `from` that makes the edge.
    edges: BTreeMap<(Vec<String>, Vec<String>), usize>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let mut files = BTreeMap::new();
    for p in &paths {
        let rel = p.strip_prefix(&src).expect("under src").to_path_buf();
        files.insert(module_path(&rel), rel);
    }
    let names: BTreeSet<Vec<String>> = files.keys().cloned().collect();
    // Files that exist only for tests: declared under `#[cfg(test)]`.
    let mut test_only: BTreeSet<Vec<String>> = BTreeSet::new();
    for (module, rel) in &files {
        let text = std::fs::read_to_string(src.join(rel)).expect("readable source");
        let code = strip(&text);
        let mut from = 0;
        while let Some(at) = find(code.as_bytes(), b"#[cfg(test)]", from) {
            from = at + 1;
            let tail = &code[at..];
            let Some(decl) = tail.find("mod ") else { continue };
            let item_end = tail.find([';', '{']).unwrap_or(tail.len());
            if decl > item_end {
                continue;
            }
            let name: String = tail[decl + 4..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let mut child = module.clone();
            child.push(name);
            test_only.insert(child);
        }
    }
    let mut edges = BTreeMap::new();
    for (module, rel) in &files {
        if test_only.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        let text = std::fs::read_to_string(src.join(rel)).expect("readable source");
        let code = without_test_items(&strip(&text));
        let is_mod = rel.ends_with("mod.rs") || rel.ends_with("lib.rs");
        for (path, line) in referenced_paths(&code) {
            let to = resolve(module, is_mod, &path, &names);
            // Into itself, or into its own submodules: containment.
            if to.starts_with(module) {
                continue;
            }
            edges.entry((module.clone(), to)).or_insert(line);
        }
    }
    files.retain(|m, _| !test_only.iter().any(|t| m.starts_with(t)));
    edges.retain(|(_, to), _| files.contains_key(to));
    Graph { files, edges }
}

fn is_exception(from: &Path, to: &Path) -> bool {
    KNOWN_EXCEPTIONS
        .iter()
        .any(|(f, t, _)| Path::new(f) == from && Path::new(t) == to)
}

#[test]
fn every_module_has_a_layer() {
    let g = graph();
    if std::env::var_os("LAYERING_PRINT").is_some() {
        for ((from, to), line) in &g.edges {
            println!(
                "{} -> {} ({}:{line})",
                show(from),
                show(to),
                g.files[from].display()
            );
        }
    }
    let unplaced: BTreeSet<&str> = g
        .files
        .keys()
        .filter_map(|m| m.first())
        .map(String::as_str)
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS in tests/layering.rs: {unplaced:?}"
    );
}

#[test]
fn layers_import_only_below_them() {
    let g = graph();
    let mut report = String::new();
    for ((from, to), line) in &g.edges {
        let (Some(f), Some(t)) = (from.first(), to.first()) else {
            continue;
        };
        let (Some(lf), Some(lt)) = (layer_of(f), layer_of(t)) else {
            continue;
        };
        if lt > lf && !is_exception(&g.files[from], &g.files[to]) {
            let _ = writeln!(
                report,
                "src/{}:{line}: {} (layer {lf}) imports {} (layer {lt})",
                g.files[from].display(),
                show(from),
                show(to)
            );
        }
    }
    assert!(report.is_empty(), "upward edges:\n{report}");
}

#[test]
fn no_cycles_between_files() {
    let g = graph();
    let mut next: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = BTreeMap::new();
    for (from, to) in g.edges.keys() {
        if !is_exception(&g.files[from], &g.files[to]) {
            next.entry(from).or_default().push(to);
        }
    }
    // Depth-first search for a back edge; report the cycle it closes.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark: BTreeMap<&Vec<String>, Mark> = g.files.keys().map(|m| (m, Mark::New)).collect();
    let mut cycles = Vec::new();
    fn visit<'a>(
        m: &'a Vec<String>,
        next: &BTreeMap<&'a Vec<String>, Vec<&'a Vec<String>>>,
        mark: &mut BTreeMap<&'a Vec<String>, Mark>,
        stack: &mut Vec<&'a Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        mark.insert(m, Mark::Open);
        stack.push(m);
        for &n in next.get(m).map(Vec::as_slice).unwrap_or(&[]) {
            match mark[n] {
                Mark::New => visit(n, next, mark, stack, cycles),
                Mark::Open => {
                    let at = stack.iter().position(|s| *s == n).unwrap_or(0);
                    let names: Vec<String> = stack[at..].iter().map(|s| show(s)).collect();
                    cycles.push(format!("{} -> {}", names.join(" -> "), show(n)));
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark.insert(m, Mark::Done);
    }
    let keys: Vec<&Vec<String>> = g.files.keys().collect();
    for m in keys {
        if mark[m] == Mark::New {
            visit(m, &next, &mut mark, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn known_exceptions_still_occur() {
    let g = graph();
    for (from, to, why) in KNOWN_EXCEPTIONS {
        let found = g
            .edges
            .keys()
            .any(|(f, t)| g.files[f] == Path::new(from) && g.files[t] == Path::new(to));
        assert!(
            found,
            "the exception {from} -> {to} ({why}) no longer occurs: remove it from KNOWN_EXCEPTIONS"
        );
    }
}

/// The checks above catch what they claim to: a made-up source tree with an
/// upward edge, a cycle and a grouped import is read as such.
#[test]
fn the_parser_reads_paths_groups_and_skips_tests() {
    let code = strip(
        "use crate::{a::X, b::{c::Y, Z}};\n\
         use super::store::Probe; // crate::commented::Out\n\
         let s = \"crate::in_string::No\"; let c = '{';\n\
         #[cfg(test)]\nmod tests { use crate::tested::T; }\n\
         fn f<'a>(x: &'a u8) { crate::inline::call(); }\n",
    );
    let code = without_test_items(&code);
    let found: Vec<String> = referenced_paths(&code)
        .into_iter()
        .map(|(p, _)| p.join("::"))
        .collect();
    assert_eq!(
        found,
        [
            "crate::a::X",
            "crate::b::c::Y",
            "crate::b::Z",
            "crate::inline::call",
            "super::store::Probe"
        ]
    );
    let files: BTreeSet<Vec<String>> = [vec![], vec!["state".into()], vec!["state".into(), "store".into()]]
        .into_iter()
        .collect();
    let here = vec!["state".to_owned(), "pending".to_owned()];
    let path: Vec<String> = ["super", "store", "Probe"].map(String::from).to_vec();
    assert_eq!(resolve(&here, false, &path, &files), ["state", "store"]);
}
