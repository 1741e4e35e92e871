//! The administrator's rotation password policy, and how it combines with a task's request.
//!
//! Threat: a task that asks for a weak password (one allowed character, length 1, eight
//! digits) and so knows or can guess the secret the host then sets on the target. The
//! administrator sets a [`RotationPolicy`] in the process grant (`Grant.rotation_policy`:
//! a minimum length and the character classes every password uses; the default is 24
//! characters from all four classes). The task's request can only make the password
//! stronger: [`RotationPolicy::effective`] takes the longer length, the union of the
//! classes, and honours the task's `exclude` list only as far as the result keeps the
//! strength of the grant's policy — a length too short, or classes missing, are *raised*,
//! not refused; exclusions that shrink the alphabet make the password longer to compensate.
//! Only a request that cannot be satisfied (over a cap, a class excluded entirely, no
//! length up to the maximum that restores the strength) is refused, as is any effective
//! policy below [`password::MIN_ENTROPY_BITS`]. A grant whose own policy is below that floor is
//! refused when the process is created ([`RotationPolicy::check`]).

use std::collections::BTreeSet;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::vault::password::{self, MAX_EXCLUDE_BYTES, MAX_LENGTH, PasswordPolicy, PolicyError};

/// A character class a generated password draws from (and uses at least once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CharClass {
    /// `a`-`z`.
    Lowercase,
    /// `A`-`Z`.
    Uppercase,
    /// `0`-`9`.
    Digits,
    /// Printable ASCII punctuation (no space).
    Symbols,
}

impl CharClass {
    /// Every class, in order.
    pub const ALL: [CharClass; 4] = [
        CharClass::Lowercase,
        CharClass::Uppercase,
        CharClass::Digits,
        CharClass::Symbols,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CharClass::Lowercase => "lowercase",
            CharClass::Uppercase => "uppercase",
            CharClass::Digits => "digits",
            CharClass::Symbols => "symbols",
        }
    }
}

impl FromStr for CharClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "lowercase" | "lower" => Ok(CharClass::Lowercase),
            "uppercase" | "upper" => Ok(CharClass::Uppercase),
            "digits" | "digit" => Ok(CharClass::Digits),
            "symbols" | "symbol" => Ok(CharClass::Symbols),
            other => Err(format!(
                "unknown character class `{other}` (expected lowercase, uppercase, digits, symbols)"
            )),
        }
    }
}

/// The administrator's floor for passwords a rotation generates. Part of the process grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationPolicy {
    /// Shortest password generated (12 to 128).
    pub min_length: u32,
    /// Classes every password draws from, at least one character of each.
    pub classes: BTreeSet<CharClass>,
}

impl Default for RotationPolicy {
    /// 24 characters from all four classes (about 157 bits).
    fn default() -> Self {
        Self {
            min_length: 24,
            classes: CharClass::ALL.into_iter().collect(),
        }
    }
}

impl RotationPolicy {
    /// The policy from command-line flags: a missing flag keeps its default.
    pub fn from_flags(min_length: Option<u32>, classes: &[CharClass]) -> Self {
        let default = Self::default();
        Self {
            min_length: min_length.unwrap_or(default.min_length),
            classes: match classes {
                [] => default.classes,
                some => some.iter().copied().collect(),
            },
        }
    }

    /// The policy as a generator policy (no exclusions).
    fn as_password_policy(&self) -> PasswordPolicy {
        let has = |c| self.classes.contains(&c);
        PasswordPolicy {
            length: self.min_length,
            lowercase: has(CharClass::Lowercase),
            uppercase: has(CharClass::Uppercase),
            digits: has(CharClass::Digits),
            symbols: has(CharClass::Symbols),
            exclude: String::new(),
        }
    }

    /// Refuses a policy outside the limits or below [`password::MIN_ENTROPY_BITS`]; done when a
    /// process is created or updated, and by `warden exec` before a run.
    pub fn check(&self) -> Result<(), PolicyError> {
        self.as_password_policy().check_strength()
    }

    /// The policy a rotation generates with, given the task's `requested` one: in every
    /// dimension the stronger of the two (see the module docs). Refused only when no
    /// policy satisfies both within the limits, or the result is below the floor.
    pub fn effective(&self, requested: &PasswordPolicy) -> Result<PasswordPolicy, PolicyError> {
        if requested.length > MAX_LENGTH {
            return Err(PolicyError::Length(requested.length));
        }
        if requested.exclude.len() > MAX_EXCLUDE_BYTES {
            return Err(PolicyError::ExcludeTooLong);
        }
        let granted = self.as_password_policy();
        let mut effective = PasswordPolicy {
            length: requested.length.max(granted.length),
            lowercase: requested.lowercase || granted.lowercase,
            uppercase: requested.uppercase || granted.uppercase,
            digits: requested.digits || granted.digits,
            symbols: requested.symbols || granted.symbols,
            exclude: requested.exclude.clone(),
        };
        // The grant's own strength, over its full alphabet, is the floor the task's
        // exclusions may not go below; a grant under 128 bits (stored before this check
        // existed, or built in code) is not raised but refused below.
        let floor = granted.entropy_bits()?;
        let alphabet = effective.alphabet_len()?;
        if password::entropy_bits(effective.length, alphabet) < floor {
            let needed = password::length_for(floor, alphabet).ok_or_else(|| {
                PolicyError::TooWeak(password::entropy_bits(MAX_LENGTH, alphabet) as u32)
            })?;
            effective.length = effective.length.max(needed);
        }
        effective.check_strength()?;
        Ok(effective)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(length: u32) -> PasswordPolicy {
        PasswordPolicy {
            length,
            ..PasswordPolicy::default()
        }
    }

    fn only_digits(length: u32) -> PasswordPolicy {
        PasswordPolicy {
            length,
            lowercase: false,
            uppercase: false,
            symbols: false,
            ..PasswordPolicy::default()
        }
    }

    #[test]
    fn default_grant_policy_is_strong_and_parses_from_an_empty_object() {
        let policy: RotationPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(policy, RotationPolicy::default());
        assert_eq!(policy.check(), Ok(()));
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(
            json,
            r#"{"min_length":24,"classes":["lowercase","uppercase","digits","symbols"]}"#
        );
        let err = serde_json::from_str::<RotationPolicy>(r#"{"length":3}"#);
        assert!(err.is_err(), "unknown fields are refused");
    }

    #[test]
    fn grant_policy_below_128_bits_is_refused_at_the_boundary() {
        let digits = |min_length| RotationPolicy {
            min_length,
            classes: [CharClass::Digits].into(),
        };
        assert_eq!(digits(39).check(), Ok(()));
        assert_eq!(digits(38).check(), Err(PolicyError::TooWeak(126)));
        let all = |min_length| RotationPolicy {
            min_length,
            ..RotationPolicy::default()
        };
        assert_eq!(all(20).check(), Ok(()));
        assert_eq!(all(19).check(), Err(PolicyError::TooWeak(124)));
        assert_eq!(all(11).check(), Err(PolicyError::Length(11)));
        let none = RotationPolicy {
            classes: BTreeSet::new(),
            ..RotationPolicy::default()
        };
        assert_eq!(none.check(), Err(PolicyError::NoClass));
    }

    #[test]
    fn a_weaker_request_is_raised_to_the_grant_in_every_dimension() {
        let grant = RotationPolicy::default();
        for weak in [request(1), request(0), only_digits(8)] {
            let effective = grant.effective(&weak).unwrap();
            assert_eq!(effective.length, 24, "{weak:?}");
            assert!(effective.lowercase && effective.uppercase);
            assert!(effective.digits && effective.symbols);
        }
        // A stronger request is kept.
        let effective = grant.effective(&request(64)).unwrap();
        assert_eq!(effective.length, 64);
        let strict = RotationPolicy {
            min_length: 40,
            classes: [CharClass::Lowercase, CharClass::Digits].into(),
        };
        let effective = strict.effective(&only_digits(12)).unwrap();
        assert_eq!(effective.length, 40);
        assert!(effective.lowercase && effective.digits);
        assert!(!effective.uppercase && !effective.symbols);
    }

    #[test]
    fn exclusions_that_shrink_the_alphabet_lengthen_the_password() {
        let grant = RotationPolicy::default();
        // A one-character alphabet asked for: the grant's classes come back in, only the
        // excluded digits stay out (94 - 9 = 85 characters, 24 of them keep 153 bits).
        let one_char = PasswordPolicy {
            exclude: "012345678".into(),
            ..only_digits(24)
        };
        let effective = grant.effective(&one_char).unwrap();
        assert_eq!(effective.alphabet_len().unwrap(), 85);
        let floor = RotationPolicy::default()
            .as_password_policy()
            .entropy_bits()
            .unwrap();
        assert!(effective.entropy_bits().unwrap() >= floor);
        // Nearly everything excluded: four characters left, so 2 bits each; the length
        // grows until the grant's ~157 bits are back.
        fn keep(class: &'static str, kept: char) -> impl Iterator<Item = char> {
            class.chars().filter(move |&c| c != kept)
        }
        let exclude: String = keep("abcdefghijklmnopqrstuvwxyz", 'z')
            .chain(keep("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 'Z'))
            .chain(keep("0123456789", '9'))
            .chain(keep("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", '~'))
            .collect();
        let tiny = PasswordPolicy {
            exclude,
            ..request(12)
        };
        let effective = grant.effective(&tiny).unwrap();
        assert_eq!(effective.alphabet_len().unwrap(), 4);
        assert_eq!(effective.length, 79);
        assert!(effective.entropy_bits().unwrap() >= floor);
    }

    #[test]
    fn unsatisfiable_requests_and_weak_grants_are_refused() {
        let grant = RotationPolicy::default();
        assert_eq!(
            grant.effective(&request(129)),
            Err(PolicyError::Length(129))
        );
        let no_digit = PasswordPolicy {
            exclude: "0123456789".into(),
            ..request(24)
        };
        assert_eq!(
            grant.effective(&no_digit),
            Err(PolicyError::ClassExcluded("digit"))
        );
        // A digits-only grant left with one digit cannot be made strong at any length.
        let digits = RotationPolicy {
            min_length: 39,
            classes: [CharClass::Digits].into(),
        };
        let one = PasswordPolicy {
            exclude: "012345678".into(),
            ..only_digits(12)
        };
        assert_eq!(digits.effective(&one), Err(PolicyError::TooWeak(0)));
        // A grant under the floor (built in code, never validated) is refused at call time.
        let weak = RotationPolicy {
            min_length: 12,
            classes: [CharClass::Digits].into(),
        };
        assert_eq!(
            weak.effective(&only_digits(12)),
            Err(PolicyError::TooWeak(39))
        );
    }

    #[test]
    fn flags_fill_in_defaults_and_classes_parse() {
        let p = RotationPolicy::from_flags(Some(32), &[]);
        assert_eq!(p.min_length, 32);
        assert_eq!(p.classes.len(), 4);
        let p = RotationPolicy::from_flags(None, &[CharClass::Digits]);
        assert_eq!(p.min_length, 24);
        assert_eq!("upper".parse::<CharClass>(), Ok(CharClass::Uppercase));
        assert!("emoji".parse::<CharClass>().is_err());
    }
}
