//! Password generation for rotations: a policy (length, character classes, excluded
//! characters) and a generator drawing from the operating system's CSPRNG.
//!
//! Threat: a guessable or biased password, or one that lingers in memory. Every character
//! is chosen uniformly with [`rand::rngs::OsRng`] (no seeded or thread-local generator), one
//! from each enabled class first so the result satisfies "at least one of each" rules, then
//! shuffled so those characters sit at random positions. The password is built in a
//! [`Zeroizing`] buffer of exact capacity (no reallocation leaves a copy behind) and is
//! wiped on drop.
//!
//! The policy a rotation generates from is derived from a guest's request and the
//! administrator's floor (`crate::rotation::RotationPolicy`), so every size in it is capped
//! ([`MIN_LENGTH`], [`MAX_LENGTH`], [`MAX_EXCLUDE_BYTES`]), its strength is measured as
//! `length × log2(alphabet)` over the alphabet actually left after exclusions
//! ([`PasswordPolicy::entropy_bits`]) and must reach [`MIN_ENTROPY_BITS`], and a policy that
//! cannot be satisfied is refused with a [`PolicyError`] naming the rule. The entropy is that
//! of a uniform draw; forcing one character of each class costs a fraction of a bit, which
//! the margin of the default policy (24 characters of 94, about 157 bits) covers.

use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use zeroize::Zeroizing;

/// Shortest password generated: below this an online guessing attack becomes plausible.
pub const MIN_LENGTH: u32 = 12;

/// Longest password generated. The guest picks the length; the cap bounds host memory and
/// stays below what `chpasswd` and common PAM stacks accept.
pub const MAX_LENGTH: u32 = 128;

/// Weakest password a rotation may generate, in bits (`length × log2(alphabet)`): below
/// this an offline attack on a stolen hash is within reach, and a task that names a tiny
/// alphabet (one character) would know the password outright.
pub const MIN_ENTROPY_BITS: f64 = 128.0;

/// Largest `exclude` list, in bytes. Guest-controlled; checking it costs time per
/// candidate character, so it is capped.
pub const MAX_EXCLUDE_BYTES: usize = 256;

const LOWERCASE: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPERCASE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
/// Printable ASCII punctuation, no space (a space at either end is lost by many tools).
const SYMBOLS: &[u8] = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// What a generated password must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub length: u32,
    pub lowercase: bool,
    pub uppercase: bool,
    pub digits: bool,
    pub symbols: bool,
    /// Characters never used.
    pub exclude: String,
}

impl Default for PasswordPolicy {
    /// 24 characters from all four classes.
    fn default() -> Self {
        Self {
            length: 24,
            lowercase: true,
            uppercase: true,
            digits: true,
            symbols: true,
            exclude: String::new(),
        }
    }
}

/// Why a policy was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("password length {0} is outside {MIN_LENGTH}..={MAX_LENGTH}")]
    Length(u32),
    #[error("no character class is enabled")]
    NoClass,
    #[error("the exclude list is longer than {MAX_EXCLUDE_BYTES} bytes")]
    ExcludeTooLong,
    #[error("the exclude list removes every {0} character")]
    ClassExcluded(&'static str),
    /// Below [`MIN_ENTROPY_BITS`] (the whole bits it gives, rounded down).
    #[error("the policy gives only {0} bits of entropy; at least 128 are required")]
    TooWeak(u32),
}

impl PasswordPolicy {
    /// The enabled classes, each without the excluded characters; refuses a policy outside
    /// its limits or one that leaves a class empty.
    fn classes(&self) -> Result<Vec<Vec<u8>>, PolicyError> {
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&self.length) {
            return Err(PolicyError::Length(self.length));
        }
        if self.exclude.len() > MAX_EXCLUDE_BYTES {
            return Err(PolicyError::ExcludeTooLong);
        }
        let enabled = [
            (self.lowercase, LOWERCASE, "lowercase"),
            (self.uppercase, UPPERCASE, "uppercase"),
            (self.digits, DIGITS, "digit"),
            (self.symbols, SYMBOLS, "symbol"),
        ];
        let mut classes = Vec::new();
        for (on, chars, name) in enabled {
            if !on {
                continue;
            }
            let kept: Vec<u8> = chars
                .iter()
                .copied()
                .filter(|c| !self.exclude.as_bytes().contains(c))
                .collect();
            if kept.is_empty() {
                return Err(PolicyError::ClassExcluded(name));
            }
            classes.push(kept);
        }
        if classes.is_empty() {
            return Err(PolicyError::NoClass);
        }
        Ok(classes)
    }

    /// Checks the policy's limits and classes without generating anything (not its
    /// strength: see [`PasswordPolicy::check_strength`]).
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.classes().map(drop)
    }

    /// How many distinct characters a password may be drawn from.
    pub fn alphabet_len(&self) -> Result<usize, PolicyError> {
        Ok(self.classes()?.iter().map(Vec::len).sum())
    }

    /// `length × log2(alphabet)`, over the alphabet left after exclusions.
    pub fn entropy_bits(&self) -> Result<f64, PolicyError> {
        Ok(entropy_bits(self.length, self.alphabet_len()?))
    }

    /// Refuses a policy below [`MIN_ENTROPY_BITS`] (and one outside its limits).
    pub fn check_strength(&self) -> Result<(), PolicyError> {
        let bits = self.entropy_bits()?;
        if bits + ENTROPY_EPSILON < MIN_ENTROPY_BITS {
            return Err(PolicyError::TooWeak(floor_bits(bits)));
        }
        Ok(())
    }
}

/// Tolerance for floating-point rounding at the boundary (`32 × log2(16)` is exactly 128).
const ENTROPY_EPSILON: f64 = 1e-9;

/// `length × log2(alphabet)`; 0 for an alphabet of one character (or none).
pub fn entropy_bits(length: u32, alphabet: usize) -> f64 {
    if alphabet < 2 {
        return 0.0;
    }
    // Alphabets are at most 94 characters: the conversion is exact.
    let per_char = (alphabet as f64).log2();
    f64::from(length) * per_char
}

/// The whole bits of `bits`, for messages.
fn floor_bits(bits: f64) -> u32 {
    // Bounded by 128 × log2(94) < 900, never negative.
    bits.floor().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The shortest length at which `alphabet` characters reach `bits`; `None` if none up to
/// [`MAX_LENGTH`] does.
pub fn length_for(bits: f64, alphabet: usize) -> Option<u32> {
    (MIN_LENGTH..=MAX_LENGTH).find(|&n| entropy_bits(n, alphabet) + ENTROPY_EPSILON >= bits)
}

/// Generates a password satisfying `policy` (printable ASCII, so also valid UTF-8).
pub fn generate(policy: &PasswordPolicy) -> Result<Zeroizing<Vec<u8>>, PolicyError> {
    let classes = policy.classes()?;
    let alphabet: Vec<u8> = classes.concat();
    let length = usize::try_from(policy.length).map_err(|_| PolicyError::Length(policy.length))?;
    let mut password = Zeroizing::new(Vec::with_capacity(length));
    let mut rng = OsRng;
    for class in &classes {
        // `classes` never holds an empty class, so `choose` always yields.
        password.extend(class.choose(&mut rng));
    }
    while password.len() < length {
        password.extend(alphabet.choose(&mut rng));
    }
    password.shuffle(&mut rng);
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy::default()
    }

    #[test]
    fn has_the_length_and_a_character_of_every_enabled_class() {
        for length in [MIN_LENGTH, 24, MAX_LENGTH] {
            let p = PasswordPolicy { length, ..policy() };
            let pw = generate(&p).unwrap();
            assert_eq!(pw.len(), length as usize);
            for class in [LOWERCASE, UPPERCASE, DIGITS, SYMBOLS] {
                assert!(pw.iter().any(|c| class.contains(c)), "{class:?}");
            }
        }
    }

    #[test]
    fn uses_only_enabled_classes_and_never_an_excluded_character() {
        let p = PasswordPolicy {
            length: 64,
            symbols: false,
            uppercase: false,
            exclude: "0123456789abcdefghijklmnopqrstuvwxy".into(),
            ..policy()
        };
        // Only `z` remains of the lowercase class and no digit is left.
        assert_eq!(generate(&p), Err(PolicyError::ClassExcluded("digit")));
        let p = PasswordPolicy { digits: false, ..p };
        let pw = generate(&p).unwrap();
        assert!(
            pw.iter().all(|&c| c == b'z'),
            "{:?}",
            String::from_utf8_lossy(&pw)
        );
        let p = PasswordPolicy {
            exclude: "O0Il1".into(),
            ..policy()
        };
        for _ in 0..50 {
            let pw = generate(&p).unwrap();
            assert!(!pw.iter().any(|c| b"O0Il1".contains(c)));
        }
    }

    #[test]
    fn two_passwords_differ() {
        let (a, b) = (generate(&policy()).unwrap(), generate(&policy()).unwrap());
        assert_ne!(*a, *b);
    }

    #[test]
    fn refuses_policies_outside_the_limits() {
        let bad = |p: PasswordPolicy| generate(&p).err();
        assert_eq!(
            bad(PasswordPolicy {
                length: MIN_LENGTH - 1,
                ..policy()
            }),
            Some(PolicyError::Length(MIN_LENGTH - 1))
        );
        assert_eq!(
            bad(PasswordPolicy {
                length: MAX_LENGTH + 1,
                ..policy()
            }),
            Some(PolicyError::Length(MAX_LENGTH + 1))
        );
        assert_eq!(
            bad(PasswordPolicy {
                length: 0,
                ..policy()
            }),
            Some(PolicyError::Length(0))
        );
        assert_eq!(
            bad(PasswordPolicy {
                lowercase: false,
                uppercase: false,
                digits: false,
                symbols: false,
                ..policy()
            }),
            Some(PolicyError::NoClass)
        );
        assert_eq!(
            bad(PasswordPolicy {
                exclude: "x".repeat(MAX_EXCLUDE_BYTES + 1),
                ..policy()
            }),
            Some(PolicyError::ExcludeTooLong)
        );
        assert!(
            PasswordPolicy {
                exclude: "x".repeat(MAX_EXCLUDE_BYTES),
                ..policy()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn entropy_is_length_times_log2_of_the_alphabet_left_after_exclusions() {
        let all = policy();
        assert_eq!(all.alphabet_len().unwrap(), 94);
        assert!((all.entropy_bits().unwrap() - 24.0 * 94f64.log2()).abs() < 1e-9);
        // 16 lowercase letters: exactly 4 bits each, so 32 characters are exactly 128 bits.
        let sixteen = PasswordPolicy {
            length: 32,
            uppercase: false,
            digits: false,
            symbols: false,
            exclude: "abcdefghij".into(),
            ..policy()
        };
        assert_eq!(sixteen.alphabet_len().unwrap(), 16);
        assert_eq!(sixteen.entropy_bits().unwrap(), 128.0);
        assert_eq!(sixteen.check_strength(), Ok(()));
        let short = PasswordPolicy {
            length: 31,
            ..sixteen.clone()
        };
        assert_eq!(short.check_strength(), Err(PolicyError::TooWeak(124)));
        // One character left: no entropy at all, whatever the length.
        assert_eq!(entropy_bits(MAX_LENGTH, 1), 0.0);
    }

    #[test]
    fn strength_boundary_for_each_common_alphabet() {
        // (alphabet, shortest length reaching 128 bits)
        for (alphabet, shortest) in [(94, 20), (62, 22), (36, 25), (26, 28), (10, 39)] {
            assert_eq!(length_for(MIN_ENTROPY_BITS, alphabet), Some(shortest));
            assert!(entropy_bits(shortest, alphabet) >= 128.0, "{alphabet}");
            assert!(entropy_bits(shortest - 1, alphabet) < 128.0, "{alphabet}");
        }
        let digits = PasswordPolicy {
            length: 39,
            lowercase: false,
            uppercase: false,
            symbols: false,
            ..policy()
        };
        assert_eq!(digits.check_strength(), Ok(()));
        let digits = PasswordPolicy {
            length: 38,
            ..digits
        };
        assert_eq!(digits.check_strength(), Err(PolicyError::TooWeak(126)));
        assert_eq!(length_for(MIN_ENTROPY_BITS, 2), Some(MAX_LENGTH));
        assert_eq!(length_for(MIN_ENTROPY_BITS + 1.0, 2), None);
    }

    #[test]
    fn every_character_is_reachable() {
        // 2560 draws from 94 characters: a missing one means a biased alphabet.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let p = PasswordPolicy {
                length: MAX_LENGTH,
                ..policy()
            };
            seen.extend(generate(&p).unwrap().iter().copied());
        }
        assert_eq!(
            seen.len(),
            LOWERCASE.len() + UPPERCASE.len() + DIGITS.len() + SYMBOLS.len()
        );
    }
}
