//! Test support: RS256 and ES256 JWTs with the JWKS that verifies them, for tests of
//! `jwt_authn` (and of RBAC on its payloads) against real Envoy.
//!
//! ```ignore
//! let signer = Signer::rs256("key-1");
//! let jwks = signer.jwks();                       // inline it in a RequestAuthentication
//! let token = signer.token(&claims("https://issuer.example", "alice", 3600));
//! ```

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, SigningKey};
use serde_json::{Value, json};

/// A fixed 2048-bit RSA key: ring signs with RSA but cannot generate RSA keys. Test-only.
const TEST_RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCh7nQ9yWnMSN93
tjcot2418nPx55RdabCFe4CU3LJ2HZTpeb48kDfEoUFpSKSfzgu8Ke/x1e/JxrXK
MMdqTJ2kXujGkLXq+mzfgGfZhBYPLq2g2Fa+SG9ZDuIf7BvxI6sNpa5u6RSZF+cA
MZYFT//0/yu2pU+KwgQRdB8FPsZU7UEgwI0V6MN4+/rAntB8L68L342z9cluFgsq
m1coapwr16xRkXIaAcfKlarWIZjZu4RPuD4gNW6cOuTz0RoqBbQMx+L6zDOb+UNG
4tDc+cZ1fC/04b+52kFG5JWVqqM2EtYxD0lUD/8aXiXgqWQi5VOTxfhrq0Roq4AT
yjKJUZ9tAgMBAAECggEACUZTdBfYLnIyEnTmUzexC/f3ZMXt0oKI22xdIKmaCHfd
8pgdfvHdBS8d7v4mfQdb1rV+38FwJYTIdBc3z20p+Ph9U/ov4Ts3XH8fSO8ZewR3
v2cEuOCvN/uelKjSWje/xrKppgKa7RXYY5jIze8XavHpOrcx3McLXUXjDPWGfeYC
5iXAp0epy/abUFLx50grz2QjoGsCSsos0YM+o0Wm/Rc62r9LIVohDsTSYFK4S1yr
v7XIBT+37uJemyZZ8CPCDNUuaztgP8jD0njovBzCYlw2ZNrLVeJoTMIVoENfB/QB
zMLQMPF3dHFPnfEWVx5GIhGjyXdBH7n3TNMu+5LlAQKBgQDThZoUtdtL/dLtuK2z
mwAMyB/AqnZOLeuTOFHhqOL76LWvi2pE+pAGNubNgaRkNrmGG8t5T1Eca/sjvKux
jL6ouI729hQsnW8KrYMz+Ha/J5TVGhr77+DNPQNGYMgrYzwW2gu2E+cD79Gt2RPj
bLNLuEOKz4oP+34UlBkWkf94LQKBgQDD+1vWwwMMtJR4PwHOaVS0o+om4v1l/GlU
hsbYgxRCZCBsKzzwvpr9PHDWkX+v2IY/d4sIrEN4aFWRatJnPVdDTbpB5kUrIR3J
h9d4uPGdcyVMGJkmFkj2PmnRzv56anHfrrkJL1xaoS/q3HTQ1SlrnFOKBPNEF064
8Vkk9loMQQKBgFqRQPkPKNev1cm9onpdqrbOVXIsSr2MwepmWgDyTEYqTOjeG+Fv
G43dohNqKBZUrDk023mUsZkmzwBtP2KlbdlWNLifguHbgvkidCQjhcyxSPO52sX2
3t1h+2398JdLRSZPtGYAvZCc9b2nTfG50EdinWDpHidbuo9bHibg2m79AoGBAL2p
xHdSwuDI4eZ9E4Ju7UrkVvbLNfA9FrJ2vHlMYY7e14HXVmKmE9h/ZbRBmxDSuxkw
15zNGX6teiIA/x5qfsjjsB2We9oBcpJWpHBwi2OUy8OZCp2Rc4rbXA1wBVbzLMEM
loYND5Ol6nmgYGy53hwGbdJkeAithcH10A+1WfABAoGAXgW1ZybijcFbTYmuSKGu
CR0khWy3hVfHmiDt+MkpO/XV9ozg/zJLvfX2T37NYRTHW6KGJd7YwQ+ki/rd8SSN
onVJHfpslYt4z9l2Rh7ClcG+M7YFE+1ZsMb13McDMwq9DZSgrZzYfUghUCd1IQfT
BoyzAamK2gZMbvzLPeYHjK0=
-----END PRIVATE KEY-----
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

/// A signing key with its key id.
pub struct Signer {
    pub alg: Alg,
    pub kid: String,
    key: KeyPair,
}

impl Signer {
    /// The fixed test RSA key (every RS256 signer shares it; `kid` tells JWKS entries apart).
    pub fn rs256(kid: &str) -> Signer {
        let key = KeyPair::from_pkcs8_pem_and_sign_algo(TEST_RSA_KEY, &PKCS_RSA_SHA256).unwrap();
        Signer {
            alg: Alg::Rs256,
            kid: kid.into(),
            key,
        }
    }

    /// A fresh P-256 key.
    pub fn es256(kid: &str) -> Signer {
        Signer {
            alg: Alg::Es256,
            kid: kid.into(),
            key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let raw = self.key.public_key_raw();
        match self.alg {
            Alg::Rs256 => {
                // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
                let (seq, _) = der_take(raw, 0x30);
                let (n, rest) = der_take(seq, 0x02);
                let (e, _) = der_take(rest, 0x02);
                json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": base64url(unsigned(n)), "e": base64url(unsigned(e))})
            }
            Alg::Es256 => {
                // Uncompressed point: 0x04, x, y.
                let (x, y) = raw[1..].split_at(32);
                json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid, "x": base64url(x), "y": base64url(y)})
            }
        }
    }

    /// A JWKS holding this key only.
    pub fn jwks(&self) -> String {
        jwks(&[self])
    }

    /// A compact JWS of `claims`, its header naming the algorithm and key id.
    pub fn token(&self, claims: &Value) -> String {
        let alg = match self.alg {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        };
        let header = json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = self.key.sign(signing_input.as_bytes()).unwrap();
        let signature = match self.alg {
            Alg::Rs256 => signature,
            // ring signs ECDSA as DER; JWS wants r and s, 32 bytes each (RFC 7518 §3.4).
            Alg::Es256 => {
                let (seq, _) = der_take(&signature, 0x30);
                let (r, rest) = der_take(seq, 0x02);
                let (s, _) = der_take(rest, 0x02);
                [left_pad(unsigned(r), 32), left_pad(unsigned(s), 32)].concat()
            }
        };
        format!("{signing_input}.{}", base64url(&signature))
    }
}

/// A JWKS of several keys (for key rotation: old and new verify alike).
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

/// `iss`, `sub`, `iat` now, `exp` `valid_for_secs` from now (negative: already expired).
pub fn claims(issuer: &str, subject: &str, valid_for_secs: i64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    json!({"iss": issuer, "sub": subject, "iat": now, "exp": now + valid_for_secs})
}

/// Base64url without padding (RFC 7515 §2).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
        }
    }
    out
}

/// The contents of the DER element with `tag` at the start of `der`, and what follows it.
fn der_take(der: &[u8], tag: u8) -> (&[u8], &[u8]) {
    assert_eq!(der[0], tag, "unexpected DER tag");
    let (len, header) = match der[1] {
        short @ 0..=0x7f => (usize::from(short), 2),
        long => {
            let count = usize::from(long & 0x7f);
            (
                der[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| acc << 8 | usize::from(*b)),
                2 + count,
            )
        }
    };
    (&der[header..header + len], &der[header + len..])
}

/// A DER INTEGER's bytes without the sign byte.
fn unsigned(int: &[u8]) -> &[u8] {
    if int.len() > 1 && int[0] == 0 {
        &int[1..]
    } else {
        int
    }
}

fn left_pad(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0; len - bytes.len()];
    out.extend_from_slice(bytes);
    out
}
