use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::data_source;
use envoy_types::pb::envoy::config::route::v3::route_match;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtProvider, JwtRequirement, jwt_provider, jwt_requirement, requirement_rule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use prost::Message;

use super::mint::{Signer, base64url, claims};
use super::*;

fn ra(yaml: &str) -> RequestAuthentication {
    serde_saphyr::from_str(yaml).unwrap()
}

fn applied<'a>(
    policies: &'a [(&'a str, RequestAuthentication)],
) -> Vec<Applied<'a, RequestAuthentication>> {
    policies
        .iter()
        .map(|(name, spec)| Applied {
            namespace: "default",
            name,
            spec,
        })
        .collect()
}

fn nothing_fetched() -> BTreeMap<JwksSource, Arc<str>> {
    BTreeMap::new()
}

/// The filter's config, decoded from the bytes Envoy is sent.
fn decoded(filter: &HttpFilter) -> JwtAuthentication {
    assert_eq!(filter.name, "envoy.filters.http.jwt_authn");
    let Some(http_filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("no typed config")
    };
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
    );
    JwtAuthentication::decode(any.value.as_slice()).unwrap()
}

fn config(policies: &[(&str, RequestAuthentication)], jwks: &dyn JwksLookup) -> JwtAuthentication {
    decoded(&http_filter(&applied(policies), jwks, NodeType::Sidecar).unwrap())
}

fn inline_jwks(p: &JwtProvider) -> &str {
    match &p.jwks_source_specifier {
        Some(jwt_provider::JwksSourceSpecifier::LocalJwks(ds)) => match &ds.specifier {
            Some(data_source::Specifier::InlineString(s)) => s,
            other => panic!("not inline: {other:?}"),
        },
        other => panic!("not local: {other:?}"),
    }
}

/// The requirement tree in a compact form: `P`, `any(…)`, `all(…)`, `missing`.
fn show(r: &JwtRequirement) -> String {
    let list = |rs: &[JwtRequirement]| rs.iter().map(show).collect::<Vec<_>>().join(", ");
    match &r.requires_type {
        Some(jwt_requirement::RequiresType::ProviderName(n)) => n.clone(),
        Some(jwt_requirement::RequiresType::RequiresAny(or)) => {
            format!("any({})", list(&or.requirements))
        }
        Some(jwt_requirement::RequiresType::RequiresAll(and)) => {
            format!("all({})", list(&and.requirements))
        }
        Some(jwt_requirement::RequiresType::AllowMissing(_)) => "missing".into(),
        other => panic!("unexpected requirement {other:?}"),
    }
}

fn requirement_of(c: &JwtAuthentication) -> String {
    assert_eq!(c.rules.len(), 1);
    let rule = &c.rules[0];
    let m = rule.r#match.as_ref().unwrap();
    assert_eq!(
        m.path_specifier,
        Some(route_match::PathSpecifier::Prefix("/".into()))
    );
    let Some(requirement_rule::RequirementType::Requires(r)) = &rule.requirement_type else {
        panic!("no requirement")
    };
    show(r)
}

#[test]
fn no_jwt_rules_no_filter() {
    let policies = [("empty", ra("selector: {matchLabels: {app: a}}"))];
    assert!(http_filter(&applied(&policies), &nothing_fetched(), NodeType::Sidecar).is_none());
    assert!(http_filter(&[], &nothing_fetched(), NodeType::Sidecar).is_none());
}

#[test]
fn inline_jwks_provider_as_istiod() {
    let keys = Signer::es256("k1").jwks();
    let spec = ra(&format!(
        "jwtRules:\n- issuer: https://issuer.example\n  audiences: [a1, a2]\n  jwks: '{keys}'\n"
    ));
    let c = config(&[("ra", spec)], &nothing_fetched());

    assert_eq!(c.providers.len(), 1);
    let p = &c.providers["origins-0"];
    assert_eq!(p.issuer, "https://issuer.example");
    assert_eq!(p.audiences, ["a1", "a2"]);
    assert_eq!(inline_jwks(p), keys);
    assert_eq!(
        p.payload_in_metadata,
        crate::generate::security::JWT_PAYLOAD_KEY
    );
    assert_eq!(
        p.normalize_payload_in_metadata
            .as_ref()
            .unwrap()
            .space_delimited_claims,
        ["permission", "scope"]
    );
    assert!(
        !p.forward,
        "istiod strips the token unless forwardOriginalToken"
    );
    assert!(!p.clear_route_cache, "sidecar inbound");
    // The default location (Authorization: Bearer) is Envoy's when none is given.
    assert!(p.from_headers.is_empty() && p.from_params.is_empty() && p.from_cookies.is_empty());
    assert!(c.bypass_cors_preflight);
    assert_eq!(requirement_of(&c), "any(origins-0, missing)");
}

#[test]
fn gateways_clear_the_route_cache() {
    let policies = [("ra", ra("jwtRules: [{issuer: i, jwks: '{\"keys\":[]}'}]"))];
    let filter = http_filter(&applied(&policies), &nothing_fetched(), NodeType::Router).unwrap();
    assert!(decoded(&filter).providers["origins-0"].clear_route_cache);
}

#[test]
fn jwks_uri_inlines_the_fetched_keys_or_unusable_ones() {
    let policies = [(
        "ra",
        ra(
            "jwtRules:\n- {issuer: fetched, jwksUri: 'https://keys.example/a'}\n- {issuer: missing, jwksUri: 'https://keys.example/b'}\n- {issuer: discovered}\n",
        ),
    )];
    let fetched_keys = Signer::es256("a").jwks();
    let discovered_keys = Signer::rs256("d").jwks();
    let jwks: BTreeMap<JwksSource, Arc<str>> = [
        (
            JwksSource::Uri("https://keys.example/a".into()),
            fetched_keys.as_str().into(),
        ),
        (
            JwksSource::Discovery {
                issuer: "discovered".into(),
            },
            discovered_keys.as_str().into(),
        ),
    ]
    .into();
    let c = config(&policies, &jwks);
    let by_issuer: BTreeMap<&str, &str> = c
        .providers
        .values()
        .map(|p| (p.issuer.as_str(), inline_jwks(p)))
        .collect();
    assert_eq!(by_issuer["fetched"], fetched_keys);
    assert_eq!(by_issuer["discovered"], discovered_keys);
    assert_eq!(by_issuer["missing"], UNAVAILABLE_JWKS);
    // The stand-in is a valid JWKS, or Envoy would not reject that issuer's tokens by key.
    crate::source::jwks::check_jwks(UNAVAILABLE_JWKS).unwrap();
}

#[test]
fn token_locations_claims_and_forwarding() {
    let spec = ra(r#"
jwtRules:
- issuer: i
  jwks: '{"keys":[]}'
  fromHeaders: [{name: x-jwt, prefix: "Bearer "}, {name: x-raw}]
  fromParams: [token, access_token]
  fromCookies: [session]
  outputClaimToHeaders: [{header: x-sub, claim: sub}, {header: x-group, claim: group}]
  outputPayloadToHeader: x-payload
  forwardOriginalToken: true
  spaceDelimitedClaims: [roles, scope]
"#);
    let c = config(&[("ra", spec)], &nothing_fetched());
    let p = &c.providers["origins-0"];
    let headers: Vec<(&str, &str)> = p
        .from_headers
        .iter()
        .map(|h| (h.name.as_str(), h.value_prefix.as_str()))
        .collect();
    assert_eq!(headers, [("x-jwt", "Bearer "), ("x-raw", "")]);
    assert_eq!(p.from_params, ["token", "access_token"]);
    assert_eq!(p.from_cookies, ["session"]);
    let claims: Vec<(&str, &str)> = p
        .claim_to_headers
        .iter()
        .map(|c| (c.header_name.as_str(), c.claim_name.as_str()))
        .collect();
    assert_eq!(claims, [("x-sub", "sub"), ("x-group", "group")]);
    assert_eq!(p.forward_payload_header, "x-payload");
    assert!(p.forward);
    // The defaults joined, without duplicates, sorted.
    assert_eq!(
        p.normalize_payload_in_metadata
            .as_ref()
            .unwrap()
            .space_delimited_claims,
        ["permission", "roles", "scope"]
    );
}

#[test]
fn rules_of_all_policies_merge_sorted_by_issuer() {
    let policies = [
        (
            "root-wide",
            ra("jwtRules: [{issuer: zeta, jwks: '{\"keys\":[]}'}]"),
        ),
        (
            "workload",
            ra(
                "jwtRules: [{issuer: beta, jwks: '{\"keys\":[]}'}, {issuer: alpha, jwks: '{\"keys\":[]}'}]",
            ),
        ),
    ];
    let c = config(&policies, &nothing_fetched());
    let names: BTreeMap<&str, &str> = c
        .providers
        .iter()
        .map(|(n, p)| (n.as_str(), p.issuer.as_str()))
        .collect();
    assert_eq!(
        names,
        BTreeMap::from([
            ("origins-0", "alpha"),
            ("origins-1", "beta"),
            ("origins-2", "zeta")
        ])
    );
    assert_eq!(
        requirement_of(&c),
        "any(origins-0, origins-1, origins-2, all(any(origins-0, missing), any(origins-1, missing), any(origins-2, missing)))"
    );
}

#[test]
fn rules_of_one_issuer_keep_policy_order() {
    let policies = [
        (
            "a",
            ra("jwtRules: [{issuer: same, audiences: [first], jwks: '{\"keys\":[]}'}]"),
        ),
        (
            "b",
            ra("jwtRules: [{issuer: same, audiences: [second], jwks: '{\"keys\":[]}'}]"),
        ),
    ];
    let c = config(&policies, &nothing_fetched());
    assert_eq!(c.providers["origins-0"].audiences, ["first"]);
    assert_eq!(c.providers["origins-1"].audiences, ["second"]);
}

#[test]
fn required_presence_rejects_a_missing_token_of_that_issuer() {
    let one = [(
        "ra",
        ra("jwtRules: [{issuer: i, presence: REQUIRED, jwks: '{\"keys\":[]}'}]"),
    )];
    assert_eq!(
        requirement_of(&config(&one, &nothing_fetched())),
        "origins-0"
    );

    let mixed = [(
        "ra",
        ra(
            "jwtRules: [{issuer: a, jwks: '{\"keys\":[]}'}, {issuer: b, presence: REQUIRED, jwks: '{\"keys\":[]}'}]",
        ),
    )];
    assert_eq!(
        requirement_of(&config(&mixed, &nothing_fetched())),
        "all(origins-1, any(origins-0, origins-1, all(any(origins-0, missing), any(origins-1, missing))))"
    );

    let both = [(
        "ra",
        ra(
            "jwtRules: [{issuer: a, presence: REQUIRED, jwks: '{\"keys\":[]}'}, {issuer: b, presence: REQUIRED, jwks: '{\"keys\":[]}'}]",
        ),
    )];
    assert_eq!(
        requirement_of(&config(&both, &nothing_fetched())),
        "all(origins-0, origins-1)"
    );
}

#[test]
fn equal_config_encodes_to_equal_bytes() {
    let policies = [(
        "ra",
        ra(
            "jwtRules: [{issuer: c, jwks: '{\"keys\":[]}'}, {issuer: a, jwks: '{\"keys\":[]}'}, {issuer: b, jwks: '{\"keys\":[]}'}]",
        ),
    )];
    let built =
        jwt_authentication(&applied(&policies), &nothing_fetched(), NodeType::Sidecar).unwrap();

    // The same providers in maps of other hashers and insertion orders.
    let mut encodings = Vec::new();
    for reversed in [false, true] {
        let mut entries: Vec<(String, JwtProvider)> = built.providers.clone().into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        if reversed {
            entries.reverse();
        }
        let providers: HashMap<String, JwtProvider> = entries.into_iter().collect();
        encodings.push(encode(JwtAuthentication {
            providers,
            ..built.clone()
        }));
    }
    assert_eq!(encodings[0], encodings[1]);
    assert_eq!(
        JwtAuthentication::decode(encodings[0].as_slice()).unwrap(),
        built
    );

    // With one provider there is no order to get wrong: prost's own bytes.
    let single = [("ra", ra("jwtRules: [{issuer: a, jwks: '{\"keys\":[]}'}]"))];
    let one = jwt_authentication(&applied(&single), &nothing_fetched(), NodeType::Sidecar).unwrap();
    assert_eq!(encode(one.clone()), one.encode_to_vec());
}

#[test]
fn sources_to_fetch_with_their_longest_timeout() {
    let a = ra(
        "jwtRules:\n- {issuer: x, jwksUri: 'https://k/a', timeout: 2s}\n- {issuer: y, jwksUri: 'https://k/a', timeout: 9s}\n- {issuer: z, jwksUri: 'https://k/b'}\n- {issuer: inline, jwks: '{\"keys\":[]}'}\n- {issuer: 'https://idp'}\n",
    );
    let sources = jwks_sources(&a.jwt_rules);
    assert_eq!(
        sources,
        BTreeMap::from([
            (
                JwksSource::Uri("https://k/a".into()),
                Duration::from_secs(9)
            ),
            (JwksSource::Uri("https://k/b".into()), DEFAULT_JWKS_TIMEOUT),
            (
                JwksSource::Discovery {
                    issuer: "https://idp".into()
                },
                DEFAULT_JWKS_TIMEOUT
            ),
        ])
    );
}

/// The verifier rustls would use for `scheme` and `key_alg`.
fn verifier(
    scheme: rustls::SignatureScheme,
    key_alg: rustls::pki_types::AlgorithmIdentifier,
) -> &'static dyn rustls::pki_types::SignatureVerificationAlgorithm {
    let provider = rustls::crypto::ring::default_provider();
    let (_, algs) = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .unwrap();
    *algs
        .iter()
        .find(|a| a.public_key_alg_id() == key_alg)
        .unwrap()
}

fn base64url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let values: Vec<u32> = text
        .bytes()
        .map(|c| ALPHABET.iter().position(|a| *a == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in values.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, v)| acc | v << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n @ 0..=0x7f => out.push(n as u8),
        n => {
            let len = (n as u32).to_be_bytes();
            let len: Vec<u8> = len.into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | len.len() as u8);
            out.extend(len);
        }
    }
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let mut int = if bytes[0] & 0x80 != 0 {
        vec![0]
    } else {
        vec![]
    };
    int.extend_from_slice(bytes);
    der(0x02, &int)
}

/// Checks a minted token against the public key as its JWKS states it, the way a verifier does.
fn verifies(token: &str, jwks: &str) -> bool {
    let jwks: serde_json::Value = serde_json::from_str(jwks).unwrap();
    let key = &jwks["keys"][0];
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = base64url_decode(signature);
    let field = |name: &str| base64url_decode(key[name].as_str().unwrap());
    let result = match key["kty"].as_str().unwrap() {
        "RSA" => {
            let public_key = der(
                0x30,
                &[der_uint(&field("n")), der_uint(&field("e"))].concat(),
            );
            verifier(
                rustls::SignatureScheme::RSA_PKCS1_SHA256,
                rustls::pki_types::alg_id::RSA_ENCRYPTION,
            )
            .verify_signature(&public_key, signing_input.as_bytes(), &signature)
        }
        "EC" => {
            // ES256 signatures are r and s, 32 bytes each.
            if signature.len() != 64 {
                return false;
            }
            let point = [&[4u8][..], &field("x"), &field("y")].concat();
            let der_signature = der(
                0x30,
                &[der_uint(&signature[..32]), der_uint(&signature[32..])].concat(),
            );
            verifier(
                rustls::SignatureScheme::ECDSA_NISTP256_SHA256,
                rustls::pki_types::alg_id::ECDSA_P256,
            )
            .verify_signature(&point, signing_input.as_bytes(), &der_signature)
        }
        other => panic!("kty {other}"),
    };
    result.is_ok()
}

#[test]
fn minted_tokens_verify_against_their_jwks_only() {
    for signer in [Signer::rs256("r1"), Signer::es256("e1")] {
        let token = signer.token(&claims("https://issuer.example", "alice", 3600));
        assert!(verifies(&token, &signer.jwks()));
        crate::source::jwks::check_jwks(&signer.jwks()).unwrap();

        let parts: Vec<&str> = token.split('.').collect();
        let header: serde_json::Value =
            serde_json::from_slice(&base64url_decode(parts[0])).unwrap();
        assert_eq!(header["kid"], signer.kid.as_str());
        let payload: serde_json::Value =
            serde_json::from_slice(&base64url_decode(parts[1])).unwrap();
        assert_eq!(payload["sub"], "alice");

        // A changed payload no longer verifies.
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            base64url(br#"{"sub":"mallory"}"#),
            parts[2]
        );
        assert!(!verifies(&forged, &signer.jwks()));
    }
    let other = Signer::es256("e2");
    let token = Signer::es256("e1").token(&claims("i", "s", 60));
    assert!(!verifies(&token, &other.jwks()));
}

#[test]
fn base64url_round_trips_every_length() {
    for len in 0..8 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 73 + 5) as u8).collect();
        assert_eq!(base64url_decode(&base64url(&bytes)), bytes);
    }
    assert_eq!(base64url(b"\xfb\xff"), "-_8");
}
