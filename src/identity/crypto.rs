//! The signature checks behind bearer tokens, done with ring (the crypto
//! rustls already uses here), installed as `jsonwebtoken`'s crypto provider.
//! `jsonwebtoken` parses the token and checks its claims; this only answers
//! "does this signature verify with this public key under this algorithm".
//!
//! Only asymmetric algorithms verify: HMAC (`HS256`, ...) is refused, so a
//! public key can never be used as a shared secret (algorithm confusion).
//! countersign never signs a token, so the signing side refuses too.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature as sig;

/// The provider; installed once per process by [`install`].
static RING: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components: |_| Err(not_supported()),
        extract_ec_public_key_coordinates: |_, _| Err(not_supported()),
        compute_digest: digest,
    },
};

/// Makes ring `jsonwebtoken`'s crypto for this process. Idempotent; if
/// something else installed a provider first, that one stays (and is the
/// only other one this binary could carry: none, as no crypto feature of
/// `jsonwebtoken` is enabled).
pub fn install() {
    let _ = RING.install_default();
}

fn not_supported() -> Error {
    ErrorKind::Provider("countersign only verifies tokens".into()).into()
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(not_supported())
}

fn digest(data: &[u8], hash: ThumbprintHash) -> Vec<u8> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
    };
    ring::digest::digest(alg, data).as_ref().to_vec()
}

/// How ring checks a JWS `alg`'s signatures.
#[derive(Clone, Copy)]
enum Scheme {
    /// RSA, from the modulus and exponent (at least 2048 bits).
    Rsa(&'static sig::RsaParameters),
    /// ECDSA over an uncompressed point, or Ed25519 over its public key.
    Point(&'static dyn sig::VerificationAlgorithm),
}

/// The ring scheme for a JWS `alg`; `None` for the symmetric ones.
fn scheme(alg: Algorithm) -> Option<Scheme> {
    Some(match alg {
        Algorithm::RS256 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => Scheme::Point(&sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Scheme::Point(&sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Scheme::Point(&sig::ED25519),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
    })
}

/// The asymmetric algorithms a token may be signed with.
pub const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let alg = *alg;
    let scheme = scheme(alg).ok_or(ErrorKind::InvalidAlgorithm)?;
    // The key's family must be the algorithm's: an RSA key never checks an
    // EC signature, and no public key ever stands in for an HMAC secret.
    if key.family() != alg.family() || key.family() == AlgorithmFamily::Hmac {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingVerifier {
        alg,
        scheme,
        key: key.clone(),
    }))
}

struct RingVerifier {
    alg: Algorithm,
    scheme: Scheme,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let checked = match (self.scheme, self.key.kind()) {
            (Scheme::Rsa(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                sig::RsaPublicKeyComponents { n, e }.verify(params, message, signature)
            }
            // An EC point (0x04 || x || y) or an Ed25519 public key.
            (Scheme::Point(alg), DecodingKeyKind::SecretOrDer(public)) => {
                sig::UnparsedPublicKey::new(alg, public).verify(message, signature)
            }
            // An RSA key given as DER, or a point given as RSA components:
            // not how JWKs are read here.
            _ => return Err(signature::Error::new()),
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, Validation};
    use serde_json::Value;

    // RFC 7515 Appendix A.2: an RS256 JWS and its key.
    const RS256_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    const RS256_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    const RS256_E: &str = "AQAB";

    // RFC 7515 Appendix A.3: an ES256 JWS and its key.
    const ES256_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const ES256_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const ES256_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn lenient(alg: Algorithm) -> Validation {
        // The RFC examples expired in 2011 and name no audience.
        let mut v = Validation::new(alg);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v
    }

    #[test]
    fn the_rfc_7515_examples_verify_and_a_changed_byte_does_not() {
        install();
        let rsa = DecodingKey::from_rsa_components(RS256_N, RS256_E).unwrap();
        let claims = decode::<Value>(RS256_TOKEN, &rsa, &lenient(Algorithm::RS256)).unwrap();
        assert_eq!(claims.claims["iss"], "joe");
        let ec = DecodingKey::from_ec_components(ES256_X, ES256_Y).unwrap();
        decode::<Value>(ES256_TOKEN, &ec, &lenient(Algorithm::ES256)).unwrap();

        let tampered = RS256_TOKEN.replacen("eyJpc3Mi", "eyJpc3Ni", 1);
        let e = decode::<Value>(&tampered, &rsa, &lenient(Algorithm::RS256)).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::InvalidSignature | ErrorKind::Json(_)),
            "{e:?}"
        );
    }

    #[test]
    fn a_key_never_checks_another_familys_signature() {
        install();
        let rsa = DecodingKey::from_rsa_components(RS256_N, RS256_E).unwrap();
        // An ES256 token against an RSA key, and HS256 against anything.
        for (token, alg) in [
            (ES256_TOKEN, Algorithm::ES256),
            (RS256_TOKEN, Algorithm::HS256),
        ] {
            let e = decode::<Value>(token, &rsa, &lenient(alg)).unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::InvalidAlgorithm),
                "{alg:?}: {e:?}"
            );
        }
        let secret = DecodingKey::from_secret(b"a shared secret of some length");
        assert!(verifier(&Algorithm::HS256, &secret).is_err());
    }
}
