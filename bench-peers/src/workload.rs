//! W1 and W2 exactly as DESIGN.md defines them, and the values every engine
//! writes.
//!
//! Put `i` of the main phase writes key `format!("{:016}", (i * 2654435761) % keys)`.
//! The churn phase (1% of the puts, to 1% of the keys, spread evenly over
//! the key space) follows it with the same multiplicative spread. Each put's
//! value is a pure function of its put number, so the expected final state is
//! computed before an engine opens and never inside a timed loop.

/// Knuth's multiplicative constant, as DESIGN.md writes W1's key sequence.
const SPREAD: u64 = 2_654_435_761;
/// Puts in one epoch (made durable before the next put).
pub const PUTS_PER_EPOCH: u64 = 1_000;
/// Every key is 16 ASCII digits.
pub const KEY_LEN: usize = 16;

/// One workload: how many puts over how many keys, and the value size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub name: &'static str,
    pub puts: u64,
    pub keys: u64,
    pub value_len: usize,
}

pub const W1: Workload = Workload {
    name: "W1",
    puts: 1_000_000,
    keys: 200_000,
    value_len: 100,
};
pub const W2: Workload = Workload {
    name: "W2",
    puts: 300_000,
    keys: 100_000,
    value_len: 1024,
};
/// The opt-in overwrite mode: W1's keys and values, twenty times as long.
pub const OVERWRITE: Workload = Workload {
    name: "overwrite",
    puts: 20_000_000,
    keys: 200_000,
    value_len: 100,
};

impl Workload {
    pub fn by_name(name: &str) -> Option<Workload> {
        [W1, W2, OVERWRITE]
            .into_iter()
            .find(|w| w.name.eq_ignore_ascii_case(name))
    }

    /// The churn phase: 1% of the puts to 1% of the keys.
    pub fn churn_puts(&self) -> u64 {
        self.puts / 100
    }

    fn churn_keys(&self) -> u64 {
        (self.keys / 100).max(1)
    }

    /// The key index that main-phase put `i` writes.
    #[inline]
    pub fn main_key(&self, i: u64) -> u64 {
        (i.wrapping_mul(SPREAD)) % self.keys
    }

    /// The key index that churn put `j` writes: 1% of the keys, evenly spread.
    #[inline]
    pub fn churn_key(&self, j: u64) -> u64 {
        let stride = self.keys / self.churn_keys();
        (j.wrapping_mul(SPREAD) % self.churn_keys()) * stride
    }

    /// Bytes of live data once every key is written: key + value per key.
    pub fn live_bytes(&self) -> u64 {
        self.keys * (KEY_LEN + self.value_len) as u64
    }

    /// For every key index, the put number (main phase `0..puts`, churn
    /// `puts..puts + churn`) whose value it holds at the end.
    pub fn final_puts(&self, with_churn: bool) -> Vec<u64> {
        let mut last = vec![u64::MAX; self.keys as usize];
        for i in 0..self.puts {
            last[self.main_key(i) as usize] = i;
        }
        if with_churn {
            for j in 0..self.churn_puts() {
                last[self.churn_key(j) as usize] = self.puts + j;
            }
        }
        last
    }
}

/// Writes key `index` into `buf`: the bytes of DESIGN.md's
/// `format!("{:016}", index)` (a test checks it), without the `String` and
/// the formatting machinery, which took a fifth of laminar-storage's put
/// loop in a profile and would have narrowed every ratio.
#[inline]
pub fn make_key(mut index: u64, buf: &mut [u8; KEY_LEN]) {
    debug_assert!(index < 10u64.pow(KEY_LEN as u32));
    for digit in buf.iter_mut().rev() {
        *digit = b'0' + (index % 10) as u8;
        index /= 10;
    }
}

/// The value of put number `put`: half of it pseudo-random, the other half a
/// copy of that half, so LZ4 shrinks it to about half (db_bench's default
/// compression ratio of 0.5). Incompressible values would hide what the
/// compressing engines gain; all-zero ones would flatter them.
#[inline]
pub fn make_value(put: u64, buf: &mut [u8]) {
    let half = buf.len() / 2;
    let mut state = put.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut chunks = buf[..half].chunks_exact_mut(8);
    for chunk in &mut chunks {
        state = splitmix64(state);
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        state = splitmix64(state);
        let n = rest.len();
        rest.copy_from_slice(&state.to_le_bytes()[..n]);
    }
    let (head, tail) = buf.split_at_mut(half);
    if half > 0 {
        for chunk in tail.chunks_mut(half) {
            let n = chunk.len();
            chunk.copy_from_slice(&head[..n]);
        }
    }
}

#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The expected final state, flat: key `k`'s value at `k * value_len`.
/// Built before an engine opens, outside every timed loop.
pub struct Expected {
    pub value_len: usize,
    pub values: Vec<u8>,
}

impl Expected {
    pub fn build(workload: &Workload, with_churn: bool) -> Expected {
        let last = workload.final_puts(with_churn);
        let mut values = vec![0u8; last.len() * workload.value_len];
        for (k, put) in last.iter().enumerate() {
            assert_ne!(*put, u64::MAX, "every key is written by the main phase");
            make_value(
                *put,
                &mut values[k * workload.value_len..(k + 1) * workload.value_len],
            );
        }
        Expected {
            value_len: workload.value_len,
            values,
        }
    }

    #[inline]
    pub fn value(&self, key: u64) -> &[u8] {
        let at = key as usize * self.value_len;
        &self.values[at..at + self.value_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_design() {
        let mut buf = [0u8; KEY_LEN];
        for i in [0u64, 1, 7, 12_345, 999_999] {
            make_key(W1.main_key(i), &mut buf);
            assert_eq!(&buf[..], format!("{:016}", (i * 2654435761) % 200_000).as_bytes());
        }
        make_key(9_999_999_999_999_999, &mut buf);
        assert_eq!(&buf[..], b"9999999999999999");
    }

    #[test]
    fn every_key_written_five_times_and_churn_hits_one_percent() {
        let mut counts = vec![0u32; W1.keys as usize];
        for i in 0..W1.puts {
            counts[W1.main_key(i) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == 5));
        let churned: std::collections::HashSet<u64> = (0..W1.churn_puts()).map(|j| W1.churn_key(j)).collect();
        assert_eq!(churned.len(), 2_000);
        assert_eq!(W1.churn_puts(), 10_000);
        assert_eq!(W2.churn_puts(), 3_000);
    }

    #[test]
    fn values_differ_per_put_and_repeat_their_first_half() {
        let (mut a, mut b) = ([0u8; 100], [0u8; 100]);
        make_value(1, &mut a);
        make_value(2, &mut b);
        assert_ne!(a, b);
        assert_eq!(a[..50], a[50..]);
    }
}
