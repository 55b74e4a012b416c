//! Verification keys, each pinned to the one algorithm it verifies, read from PEM, a JWK or a
//! JWKS. The pin is what makes key confusion impossible: a token whose `alg` names another
//! algorithm than a key's never reaches that key, so an RSA public key can never be used as an
//! HMAC secret, whatever the token says.

use std::str::FromStr;

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use crate::config::KeyConfig;
use crate::error::Error;

/// A key and the one algorithm it verifies.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material: an HMAC secret is a secret.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The algorithm named in the configuration; names are case-sensitive, as in a JWT header.
pub(crate) fn algorithm(name: &str) -> Result<Algorithm, Error> {
    Algorithm::from_str(name).map_err(|_| Error::UnknownAlgorithm(name.to_owned()))
}

/// A key given in the configuration, with exactly one of `secret`, `secret_base64`, `pem` or
/// `jwk`.
pub(crate) fn from_config(config: &KeyConfig) -> Result<Key, Error> {
    let algorithm = algorithm(&config.algorithm)?;
    let name = config
        .kid
        .clone()
        .unwrap_or_else(|| config.algorithm.clone());
    let invalid = |reason: String| Error::InvalidKey {
        key: name.clone(),
        reason,
    };
    let given = [
        config.secret.is_some(),
        config.secret_base64.is_some(),
        config.pem.is_some(),
        config.jwk.is_some(),
    ];
    if given.iter().filter(|given| **given).count() != 1 {
        return Err(invalid(
            "give exactly one of `secret`, `secret_base64`, `pem` and `jwk`".to_owned(),
        ));
    }
    let decoding = if let Some(secret) = &config.secret {
        hmac_key(algorithm, secret.as_bytes()).map_err(invalid)?
    } else if let Some(secret) = &config.secret_base64 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|error| invalid(format!("`secret_base64` is not base64: {error}")))?;
        hmac_key(algorithm, &bytes).map_err(invalid)?
    } else if let Some(pem) = &config.pem {
        pem_key(algorithm, pem.as_bytes()).map_err(invalid)?
    } else if let Some(jwk) = &config.jwk {
        let jwk: Jwk = serde_json::from_value(jwk.clone())
            .map_err(|error| invalid(format!("not a JWK: {error}")))?;
        let from_jwk = jwk_algorithm(&jwk, Some(algorithm)).map_err(&invalid)?;
        if from_jwk != algorithm {
            return Err(invalid(format!(
                "the JWK is for {from_jwk:?}, not {algorithm:?}"
            )));
        }
        DecodingKey::from_jwk(&jwk).map_err(|error| invalid(error.to_string()))?
    } else {
        return Err(invalid("no key material".to_owned()));
    };
    Ok(Key {
        kid: config.kid.clone(),
        algorithm,
        decoding,
    })
}

/// An HMAC secret; RFC 7518 §3.2 asks for at least as many bytes as the hash is long.
fn hmac_key(algorithm: Algorithm, secret: &[u8]) -> Result<DecodingKey, String> {
    if algorithm.family() != AlgorithmFamily::Hmac {
        return Err(format!(
            "a secret is only for HS algorithms, not {algorithm:?}"
        ));
    }
    let least = match algorithm {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    };
    if secret.len() < least {
        return Err(format!(
            "an {algorithm:?} secret needs at least {least} bytes, this one has {}",
            secret.len()
        ));
    }
    DecodingKey::from_secret(secret).map_err(|error| error.to_string())
}

fn pem_key(algorithm: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    let key = match algorithm.family() {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => return Err("an HS key is a secret, not a PEM".to_owned()),
    };
    key.map_err(|error| format!("not a {:?} public key in PEM: {error}", algorithm.family()))
}

/// The algorithm a JWK verifies: its `alg`, else what its type and curve allow, else
/// `fallback` (RSA keys fit several algorithms).
fn jwk_algorithm(jwk: &Jwk, fallback: Option<Algorithm>) -> Result<Algorithm, String> {
    let from_type = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => return Err(format!("unsupported curve {:?}", params.curve)),
        },
        AlgorithmParameters::OctetKeyPair(params) => match params.curve {
            EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
            _ => return Err(format!("unsupported curve {:?}", params.curve)),
        },
        AlgorithmParameters::RSA(_) | AlgorithmParameters::OctetKey(_) => None,
        _ => return Err("unsupported key type".to_owned()),
    };
    let named = match jwk.common.key_algorithm {
        Some(alg) => Some(
            Algorithm::from_str(&alg.to_string())
                .map_err(|_| format!("unsupported `alg` {alg}"))?,
        ),
        None => None,
    };
    let algorithm = named.or(from_type).or(fallback).ok_or_else(|| {
        "the JWK names no `alg` and its type fits several: set `jwks_algorithm`".to_owned()
    })?;
    // The type must fit the algorithm, or a JWK could smuggle a key into another family.
    let family_fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => algorithm.family() == AlgorithmFamily::Rsa,
        AlgorithmParameters::OctetKey(_) => algorithm.family() == AlgorithmFamily::Hmac,
        _ => from_type == Some(algorithm),
    };
    if !family_fits {
        return Err(format!("the key's type does not fit {algorithm:?}"));
    }
    Ok(algorithm)
}

/// The signing keys of a JWKS document. A key meant for encryption (`use: enc`) is left out;
/// one that cannot be read is an error with its `kid`.
pub(crate) fn from_jwks(document: &[u8], fallback: Option<Algorithm>) -> Result<Vec<Key>, Error> {
    let set: JwkSet =
        serde_json::from_slice(document).map_err(|error| Error::InvalidJwks(error.to_string()))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        let invalid = |reason: String| Error::InvalidKey {
            key: kid
                .clone()
                .unwrap_or_else(|| "a JWKS key without kid".to_owned()),
            reason,
        };
        let algorithm = jwk_algorithm(jwk, fallback).map_err(invalid)?;
        let decoding = DecodingKey::from_jwk(jwk).map_err(|error| invalid(error.to_string()))?;
        keys.push(Key {
            kid: kid.clone(),
            algorithm,
            decoding,
        });
    }
    Ok(keys)
}
