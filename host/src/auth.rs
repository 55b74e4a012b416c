//! `gateway auth ...`: tools for the auth filter's configuration.
//!
//! `gateway auth hash-password` writes the hash a user's `password_hash` takes. The password
//! is read from stdin (one line, the line end dropped), never from the command line, where
//! it would land in the shell history and the process list. Argon2id by default, with
//! OWASP's parameters (19 MiB, 2 passes, 1 lane); bcrypt if asked, for operators who already
//! keep bcrypt hashes. The filter verifies both.

use std::io::BufRead;

use anyhow::{Context, bail};
use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use clap::ValueEnum;

/// The hash to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scheme {
    /// Argon2id (RFC 9106): memory-hard; the default.
    Argon2id,
    /// bcrypt, cost 12.
    Bcrypt,
}

/// Argon2id's cost: memory in KiB, passes, lanes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Argon2Cost {
    pub(crate) memory_kib: u32,
    pub(crate) passes: u32,
    pub(crate) lanes: u32,
}

/// The PHC or bcrypt string for `password`.
pub(crate) fn hash(password: &str, scheme: Scheme, cost: Argon2Cost) -> anyhow::Result<String> {
    if password.is_empty() {
        bail!("the password is empty");
    }
    match scheme {
        Scheme::Argon2id => {
            let params = argon2::Params::new(cost.memory_kib, cost.passes, cost.lanes, None)
                .map_err(|error| anyhow::anyhow!("invalid Argon2 parameters: {error}"))?;
            let hasher =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let salt = SaltString::generate(&mut OsRng);
            Ok(hasher
                .hash_password(password.as_bytes(), &salt)
                .map_err(|error| anyhow::anyhow!("cannot hash: {error}"))?
                .to_string())
        }
        Scheme::Bcrypt => bcrypt::hash(password, 12).context("cannot hash"),
    }
}

/// Reads the password: the first line of stdin, without its line end.
pub(crate) fn read_password(input: impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    let mut input = input;
    input
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_owned())
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHash, PasswordVerifier};

    use super::*;

    const CHEAP: Argon2Cost = Argon2Cost {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    #[test]
    fn argon2id_hashes_verify_and_are_salted() {
        let first = hash("s3cret", Scheme::Argon2id, CHEAP).expect("hashes");
        let second = hash("s3cret", Scheme::Argon2id, CHEAP).expect("hashes");
        assert!(first.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{first}");
        assert_ne!(first, second, "a fresh salt each time");
        let parsed = PasswordHash::new(&first).expect("PHC string");
        assert!(
            argon2::Argon2::default()
                .verify_password(b"s3cret", &parsed)
                .is_ok()
        );
        assert!(
            argon2::Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
    }

    #[test]
    fn the_password_is_the_first_line_without_its_end() {
        assert_eq!(
            read_password(&b"pa ss\r\nrest"[..]).expect("reads"),
            "pa ss"
        );
        assert_eq!(read_password(&b"last"[..]).expect("reads"), "last");
        assert!(hash("", Scheme::Argon2id, CHEAP).is_err());
    }
}
