//! Pins: a checkpoint the user asked retention to keep, recorded in the
//! store as an empty object `pin_{id:016x}`, so a pin survives restarts
//! and is honoured by whichever node owns the store next.

/// Prefix of a pin's name.
pub(crate) const PIN_PREFIX: &str = "pin_";

/// `pin_{id:016x}`.
pub(crate) fn pin_name(id: u64) -> String {
    format!("{PIN_PREFIX}{id:016x}")
}

/// The checkpoint id in a pin's name.
pub(crate) fn parse_pin_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(PIN_PREFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_near_misses() {
        assert_eq!(parse_pin_name(&pin_name(0x2a)), Some(0x2a));
        assert_eq!(parse_pin_name("pin_000000000000002a.tmp"), None);
        assert_eq!(parse_pin_name("pin_2a"), None);
    }
}
