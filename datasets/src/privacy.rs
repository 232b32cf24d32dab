//! Pseudonymous customer ids: with `[privacy] pseudonymise_customer_ids = true`, a bundle holds a
//! salted SHA-256 of every customer id instead of the id. The salt comes from an environment
//! variable (never from the config or the bundle), so the bundle alone does not tell who is who;
//! scoring jobs given the same salt map the ids of their input files to the same pseudonyms.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DataError;

/// Turns ids into pseudonyms with one salt.
#[derive(Clone)]
pub struct Pseudonymiser {
    salt: Vec<u8>,
}

/// What a bundle records about its pseudonyms: where the salt comes from, and a check value
/// that tells whether a salt is the same (not the salt itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PseudonymInfo {
    pub salt_env: String,
    pub salt_check: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Pseudonymiser {
    /// The salt in environment variable `var`: an error naming the variable when it is unset or
    /// shorter than 16 characters.
    pub fn from_env(var: &str) -> Result<Self, DataError> {
        match std::env::var(var) {
            Ok(s) if s.chars().count() >= 16 => Ok(Pseudonymiser {
                salt: s.into_bytes(),
            }),
            Ok(_) => Err(DataError::Invalid(format!(
                "the salt in ${var} is shorter than 16 characters; use a long random value, \
                 kept secret and the same for training and scoring"
            ))),
            Err(_) => Err(DataError::Invalid(format!(
                "customer ids are pseudonymised, but ${var} (the salt) is not set; set it to the \
                 secret value used for training"
            ))),
        }
    }

    /// The pseudonym of `id`: `p_` and 32 hex digits of SHA-256(salt length, salt, id).
    pub fn apply(&self, id: &str) -> String {
        let mut h = Sha256::new();
        h.update((self.salt.len() as u64).to_le_bytes());
        h.update(&self.salt);
        h.update(id.as_bytes());
        format!("p_{}", hex(&h.finalize()[..16]))
    }

    /// The record a bundle keeps: the variable's name and a check value of the salt.
    pub fn info(&self, salt_env: &str) -> PseudonymInfo {
        let mut h = Sha256::new();
        h.update(b"shopcast salt check");
        h.update(&self.salt);
        PseudonymInfo {
            salt_env: salt_env.to_string(),
            salt_check: hex(&h.finalize()[..8]),
        }
    }

    /// The pseudonymiser of a bundle: its salt from the recorded variable, checked against the
    /// recorded check value.
    pub fn for_bundle(info: &PseudonymInfo) -> Result<Self, DataError> {
        let p = Self::from_env(&info.salt_env)?;
        if p.info(&info.salt_env).salt_check != info.salt_check {
            return Err(DataError::Invalid(format!(
                "the salt in ${} is not the one the bundle was trained with: its customer ids \
                 would not be recognised",
                info.salt_env
            )));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_depend_on_the_salt_and_hide_the_id() {
        let a = Pseudonymiser {
            salt: b"a-long-secret-salt-1".to_vec(),
        };
        let b = Pseudonymiser {
            salt: b"a-long-secret-salt-2".to_vec(),
        };
        let p = a.apply("C00001");
        assert_eq!(p, a.apply("C00001"), "stable");
        assert_ne!(p, b.apply("C00001"), "salted");
        assert_ne!(p, a.apply("C00002"));
        assert!(!p.contains("C00001") && p.len() == 34, "{p}");
        assert_ne!(a.info("X").salt_check, b.info("X").salt_check);
    }
}
