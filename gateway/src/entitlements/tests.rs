use super::*;
use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;

fn no_env(_: &str) -> Option<String> {
    None
}

fn hs_keys() -> TokenKeys {
    let spec = TokenKeySpec {
        kid: None,
        alg: "HS256".into(),
        secret: Some(SECRET.into()),
        public_key: None,
    };
    TokenKeys::new(&[spec], None, None, 30, &no_env).unwrap()
}

fn claims() -> Value {
    json!({"sub": "user-42", "exp": NOW + 600, "entitlements": {"subscriber": true, "plan": "premium", "seats": 3}})
}

fn ed25519() -> (Ed25519KeyPair, String) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    (pair, public)
}

fn sign_ed(pair: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = pair.sign(signing.as_bytes());
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[test]
fn a_valid_hs256_token_vouches_for_its_user_and_entitlements() {
    let v = hs_keys()
        .verify(&sign_hs256(SECRET.as_bytes(), None, &claims()), NOW)
        .unwrap();
    assert_eq!(v.user.as_deref(), Some("user-42"));
    assert_eq!(v.expires, NOW + 600);
    assert!(v.entitled.contains(&("subscriber".into(), json!(true))));
    assert!(v.entitled.contains(&("plan".into(), json!("premium"))));
    assert!(v.entitled.contains(&("seats".into(), json!(3))));
}

#[test]
fn a_valid_eddsa_token_vouches_and_a_key_cannot_be_used_with_another_algorithm() {
    let (pair, public) = ed25519();
    let spec = TokenKeySpec {
        kid: Some("2026-11".into()),
        alg: "EdDSA".into(),
        secret: None,
        public_key: Some(public.clone()),
    };
    let keys = TokenKeys::new(&[spec], None, None, 0, &no_env).unwrap();
    let header = json!({"alg": "EdDSA", "kid": "2026-11"});
    let v = keys
        .verify(&sign_ed(&pair, &header, &claims()), NOW)
        .unwrap();
    assert_eq!(v.user.as_deref(), Some("user-42"));

    // HS256 "signed" with the public key as the secret: the classic confusion, refused.
    let forged = sign_hs256(public.as_bytes(), Some("2026-11"), &claims());
    assert_eq!(keys.verify(&forged, NOW), Err(TokenError::Algorithm));
    // alg none, no signature.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "2026-11"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert_eq!(keys.verify(&none, NOW), Err(TokenError::Algorithm));
    // Another key's signature.
    let (other, _) = ed25519();
    assert_eq!(
        keys.verify(&sign_ed(&other, &header, &claims()), NOW),
        Err(TokenError::Signature)
    );
    // An unknown kid.
    let header = json!({"alg": "EdDSA", "kid": "2025-01"});
    assert_eq!(
        keys.verify(&sign_ed(&pair, &header, &claims()), NOW),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn a_changed_claim_breaks_the_signature() {
    let token = sign_hs256(SECRET.as_bytes(), None, &claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged["sub"] = json!("victim");
    let payload = URL_SAFE_NO_PAD.encode(forged.to_string());
    parts[1] = &payload;
    assert_eq!(
        hs_keys().verify(&parts.join("."), NOW),
        Err(TokenError::Signature)
    );
    // Signed with another secret.
    let other = sign_hs256(b"another secret of at least 32 bytes!", None, &claims());
    assert_eq!(hs_keys().verify(&other, NOW), Err(TokenError::Signature));
}

#[test]
fn time_is_checked_with_the_leeway() {
    let keys = hs_keys();
    let at = |claims: Value| keys.verify(&sign_hs256(SECRET.as_bytes(), None, &claims), NOW);
    assert_eq!(at(json!({"exp": NOW - 31})), Err(TokenError::Expired));
    assert!(at(json!({"exp": NOW - 29})).is_ok(), "within the leeway");
    assert_eq!(at(json!({"sub": "a"})), Err(TokenError::Expired), "no exp");
    assert_eq!(at(json!({"exp": "tomorrow"})), Err(TokenError::Expired));
    assert_eq!(
        at(json!({"exp": NOW + 600, "nbf": NOW + 100})),
        Err(TokenError::NotYetValid)
    );
    assert!(at(json!({"exp": NOW + 600, "nbf": NOW + 10})).is_ok());
    assert_eq!(at(json!({"exp": 1e300})).map(|v| v.user), Ok(None));
}

#[test]
fn issuer_and_audience_are_checked_when_the_site_names_them() {
    let spec = TokenKeySpec {
        kid: None,
        alg: "HS256".into(),
        secret: Some(SECRET.into()),
        public_key: None,
    };
    let keys = TokenKeys::new(
        &[spec],
        Some("https://news.example".into()),
        Some("pulse".into()),
        0,
        &no_env,
    )
    .unwrap();
    let at = |claims: Value| keys.verify(&sign_hs256(SECRET.as_bytes(), None, &claims), NOW);
    let exp = NOW + 60;
    assert!(at(json!({"exp": exp, "iss": "https://news.example", "aud": "pulse"})).is_ok());
    assert!(at(json!({"exp": exp, "iss": "https://news.example", "aud": ["x", "pulse"]})).is_ok());
    assert_eq!(
        at(json!({"exp": exp, "iss": "https://evil.example", "aud": "pulse"})),
        Err(TokenError::Audience)
    );
    assert_eq!(
        at(json!({"exp": exp, "iss": "https://news.example"})),
        Err(TokenError::Audience)
    );
}

#[test]
fn claims_of_the_wrong_shape_are_refused() {
    let keys = hs_keys();
    let at = |claims: Value| keys.verify(&sign_hs256(SECRET.as_bytes(), None, &claims), NOW);
    let exp = NOW + 60;
    assert_eq!(at(json!({"exp": exp, "sub": 42})), Err(TokenError::Claims));
    assert_eq!(at(json!({"exp": exp, "sub": ""})), Err(TokenError::Claims));
    assert_eq!(
        at(json!({"exp": exp, "sub": "x".repeat(MAX_SUBJECT + 1)})),
        Err(TokenError::Claims)
    );
    assert_eq!(
        at(json!({"exp": exp, "entitlements": ["subscriber"]})),
        Err(TokenError::Claims)
    );
    assert_eq!(
        at(json!({"exp": exp, "entitlements": {"nested": {"a": 1}}})),
        Err(TokenError::Claims)
    );
    assert_eq!(
        at(json!({"exp": exp, "entitlements": {"bad name": true}})),
        Err(TokenError::Claims)
    );
    let many: serde_json::Map<String, Value> = (0..=MAX_ENTITLEMENTS)
        .map(|i| (format!("e{i}"), json!(true)))
        .collect();
    assert_eq!(
        at(json!({"exp": exp, "entitlements": many})),
        Err(TokenError::Claims)
    );
}

#[test]
fn malformed_tokens_say_so() {
    let keys = hs_keys();
    for bad in [
        "",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        "e30.e30.e30",
        "bm90IGpzb24.e30.AA",
    ] {
        let e = keys.verify(bad, NOW).unwrap_err();
        assert!(
            matches!(e, TokenError::Malformed | TokenError::Signature),
            "{bad:?}: {e:?}"
        );
    }
    assert_eq!(
        keys.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW),
        Err(TokenError::TooLarge)
    );
}

#[test]
fn key_settings_are_checked() {
    let spec =
        |alg: &str, secret: Option<&str>, public: Option<&str>, kid: Option<&str>| TokenKeySpec {
            kid: kid.map(str::to_owned),
            alg: alg.into(),
            secret: secret.map(str::to_owned),
            public_key: public.map(str::to_owned),
        };
    let problems = TokenKeys::new(
        &[
            spec("HS256", Some("short"), None, Some("a")),
            spec("EdDSA", None, Some("not base64!"), Some("b")),
            spec("RS256", None, None, Some("c")),
            spec("HS256", Some("env:PULSE_NOPE"), None, Some("d")),
            spec("EdDSA", Some(SECRET), None, Some("e")),
        ],
        None,
        None,
        0,
        &no_env,
    )
    .unwrap_err();
    assert_eq!(problems.len(), 5, "{problems:?}");
    let env = |name: &str| (name == "SECRET").then(|| SECRET.to_owned());
    let keys = TokenKeys::new(
        &[spec("HS256", Some("env:SECRET"), None, None)],
        None,
        None,
        0,
        &env,
    )
    .unwrap();
    assert!(
        keys.verify(&sign_hs256(SECRET.as_bytes(), None, &claims()), NOW)
            .is_ok()
    );
    let two = TokenKeys::new(
        &[
            spec("HS256", Some(SECRET), None, None),
            spec("HS256", Some(SECRET), None, Some("b")),
        ],
        None,
        None,
        0,
        &no_env,
    )
    .unwrap_err();
    assert!(two[0].contains("each needs a kid"), "{two:?}");
}

proptest! {
    #[test]
    fn any_string_is_answered_never_a_panic(s in "\\PC{0,300}", dots in proptest::collection::vec(0usize..300, 0..4)) {
        let mut token = s;
        for d in dots {
            let at = d.min(token.len());
            if token.is_char_boundary(at) {
                token.insert(at, '.');
            }
        }
        let _ = hs_keys().verify(&token, NOW);
    }
}
