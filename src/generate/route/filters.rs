//! Per-route fault and CORS configs, and the HTTP filter chain they need, as istiod's
//! `TranslateFault`, `TranslateCORSPolicy` and its HTTP filter list.

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy as EnvoyCors};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;

use super::action::{hundred, million};
use super::{RouteError, matcher};
use crate::config::istio::StringMatch;
use crate::config::istio::virtual_service::{CorsPolicy, GRPC_STATUS_NAMES, HttpFaultInjection};

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const CORS_FILTER: &str = "envoy.filters.http.cors";
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// Which optional HTTP filters the routes of a RouteConfiguration configure.
///
/// istiod always puts fault and CORS in the chain ([`HttpFilterNeeds::ALL`]); pass that to match
/// it and to keep a VirtualService gaining a fault from changing the listener (an LDS update
/// drains connections).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpFilterNeeds {
    pub fault: bool,
    pub cors: bool,
}

impl HttpFilterNeeds {
    pub const ALL: HttpFilterNeeds = HttpFilterNeeds {
        fault: true,
        cors: true,
    };
}

/// An empty `typed_per_filter_config`. prost encodes a map in iteration order, which for std's
/// `HashMap` depends on the map's random hasher keys; maps cloned from one template share those
/// keys, so equal routes encode to equal bytes and equal content hashes (no spurious pushes).
pub fn per_filter_config_map()
-> std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any> {
    static TEMPLATE: std::sync::LazyLock<
        std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any>,
    > = std::sync::LazyLock::new(std::collections::HashMap::new);
    TEMPLATE.clone()
}

/// Fault, then CORS, then the router, which must be last. Empty filter configs are no-ops until
/// a route's `typed_per_filter_config` enables them.
pub fn http_filters(needs: HttpFilterNeeds) -> Vec<HttpFilter> {
    let filter = |name: &str, config| HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(3);
    if needs.fault {
        out.push(filter(FAULT_FILTER, pack_any(HttpFault::default())));
    }
    if needs.cors {
        out.push(filter(CORS_FILTER, pack_any(Cors {})));
    }
    out.push(filter(ROUTER_FILTER, pack_any(Router::default())));
    out
}

/// `None` when nothing Envoy supports is left: exponential delays and HTTP/2 error aborts are
/// dropped, as istiod drops them.
pub(super) fn translate_fault(f: &HttpFaultInjection) -> Result<Option<HttpFault>, RouteError> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay?;
        // An unset percentage is 0% (no request delayed), as in istiod.
        let percentage = match d.percentage {
            Some(p) => million(p.value),
            None => hundred(d.percent.unwrap_or(0).max(0) as u32),
        };
        Some(FaultDelay {
            percentage: Some(percentage),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(
                fixed.to_proto(),
            )),
        })
    });
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let error_type = if let Some(status) = a.http_status {
                if !(200..600).contains(&status) {
                    return Err(RouteError::FaultHttpStatus(status));
                }
                Some(fault_abort::ErrorType::HttpStatus(status as u32))
            } else if let Some(name) = &a.grpc_status {
                let code = grpc_code(name).ok_or_else(|| RouteError::GrpcStatus(name.clone()))?;
                Some(fault_abort::ErrorType::GrpcStatus(code))
            } else {
                None
            };
            error_type.map(|e| FaultAbort {
                percentage: a.percentage.map(|p| million(p.value)),
                error_type: Some(e),
                ..Default::default()
            })
        }
    };
    if delay.is_none() && abort.is_none() {
        return Ok(None);
    }
    Ok(Some(HttpFault {
        delay,
        abort,
        ..Default::default()
    }))
}

/// gRPC status names as Istio writes them (also accepted as numbers).
fn grpc_code(name: &str) -> Option<u32> {
    GRPC_STATUS_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|i| i as u32)
        .or_else(|| {
            name.parse()
                .ok()
                .filter(|&c: &u32| (c as usize) < GRPC_STATUS_NAMES.len())
        })
}

pub(super) fn translate_cors(c: &CorsPolicy) -> Result<EnvoyCors, RouteError> {
    let origins: Vec<StringMatch> = if c.allow_origins.is_empty() {
        c.allow_origin
            .iter()
            .cloned()
            .map(StringMatch::Exact)
            .collect()
    } else {
        c.allow_origins.clone()
    };
    Ok(EnvoyCors {
        allow_origin_string_match: origins
            .iter()
            .map(|o| matcher::string_matcher(o, "corsPolicy.allowOrigins"))
            .collect::<Result<_, _>>()?,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.as_std().as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(hundred(100)),
            runtime_key: String::new(),
        }),
        // Envoy ≥1.30 answers unmatched preflights itself; istiod keeps the old forwarding
        // unless the policy says IGNORE.
        forward_not_matching_preflights: Some(BoolValue {
            value: c.unmatched_preflights.as_deref() != Some("IGNORE"),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
    use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
    use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
    use envoy_types::pb::google::protobuf::Duration as PbDuration;
    use prost::Message;

    use super::*;
    use crate::config::istio::virtual_service::{
        FaultAbort as IstioAbort, FaultDelay as IstioDelay,
    };
    use crate::config::istio::{Duration, Percent};

    fn dur(s: &str) -> Duration {
        Duration::parse(s).unwrap()
    }

    #[test]
    fn fault_delay_fixed_with_percentage_in_millionths() {
        let f = HttpFaultInjection {
            delay: Some(IstioDelay {
                fixed_delay: Some(dur("5s")),
                percentage: Some(Percent { value: 12.5 }),
                ..Default::default()
            }),
            abort: None,
        };
        let out = translate_fault(&f).unwrap().unwrap();
        let d = out.delay.unwrap();
        assert_eq!(
            d.percentage,
            Some(FractionalPercent {
                numerator: 125_000,
                denominator: DenominatorType::Million as i32
            })
        );
        assert_eq!(
            d.fault_delay_secifier,
            Some(fault_delay::FaultDelaySecifier::FixedDelay(PbDuration {
                seconds: 5,
                nanos: 0
            }))
        );
        assert!(out.abort.is_none());
    }

    #[test]
    fn fault_delay_deprecated_percent_and_exponential_dropped() {
        let f = HttpFaultInjection {
            delay: Some(IstioDelay {
                fixed_delay: Some(dur("1s")),
                percent: Some(30),
                ..Default::default()
            }),
            abort: None,
        };
        let d = translate_fault(&f).unwrap().unwrap().delay.unwrap();
        assert_eq!(
            d.percentage,
            Some(FractionalPercent {
                numerator: 30,
                denominator: DenominatorType::Hundred as i32
            })
        );
        let exp = HttpFaultInjection {
            delay: Some(IstioDelay {
                exponential_delay: Some(dur("1s")),
                ..Default::default()
            }),
            abort: None,
        };
        assert_eq!(translate_fault(&exp).unwrap(), None);
    }

    #[test]
    fn fault_abort_http_and_grpc() {
        let http = HttpFaultInjection {
            delay: None,
            abort: Some(IstioAbort {
                http_status: Some(503),
                percentage: Some(Percent { value: 100.0 }),
                ..Default::default()
            }),
        };
        let a = translate_fault(&http).unwrap().unwrap().abort.unwrap();
        assert_eq!(a.error_type, Some(fault_abort::ErrorType::HttpStatus(503)));
        assert_eq!(
            a.percentage,
            Some(FractionalPercent {
                numerator: 1_000_000,
                denominator: DenominatorType::Million as i32
            })
        );
        let grpc = HttpFaultInjection {
            delay: None,
            abort: Some(IstioAbort {
                grpc_status: Some("UNAVAILABLE".into()),
                ..Default::default()
            }),
        };
        let a = translate_fault(&grpc).unwrap().unwrap().abort.unwrap();
        assert_eq!(a.error_type, Some(fault_abort::ErrorType::GrpcStatus(14)));
        assert_eq!(a.percentage, None);
        let bad = HttpFaultInjection {
            delay: None,
            abort: Some(IstioAbort {
                grpc_status: Some("NOPE".into()),
                ..Default::default()
            }),
        };
        assert!(matches!(
            translate_fault(&bad),
            Err(RouteError::GrpcStatus(_))
        ));
        let bad = HttpFaultInjection {
            delay: None,
            abort: Some(IstioAbort {
                http_status: Some(99),
                ..Default::default()
            }),
        };
        assert!(matches!(
            translate_fault(&bad),
            Err(RouteError::FaultHttpStatus(99))
        ));
    }

    #[test]
    fn cors_policy_fields() {
        let c = CorsPolicy {
            allow_origins: vec![
                StringMatch::Exact("https://a.example".into()),
                StringMatch::Regex(".*\\.b\\.example".into()),
            ],
            allow_origin: vec!["ignored-when-allowOrigins-set".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-a".into(), "x-b".into()],
            expose_headers: vec!["x-c".into()],
            max_age: Some(dur("1m30s")),
            allow_credentials: Some(true),
            unmatched_preflights: None,
        };
        let out = translate_cors(&c).unwrap();
        let patterns: Vec<_> = out
            .allow_origin_string_match
            .iter()
            .map(|m| m.match_pattern.clone().unwrap())
            .collect();
        assert_eq!(patterns[0], MatchPattern::Exact("https://a.example".into()));
        assert!(
            matches!(&patterns[1], MatchPattern::SafeRegex(r) if r.regex == ".*\\.b\\.example")
        );
        assert_eq!(out.allow_methods, "GET,POST");
        assert_eq!(out.allow_headers, "x-a,x-b");
        assert_eq!(out.expose_headers, "x-c");
        assert_eq!(out.max_age, "90");
        assert_eq!(out.allow_credentials, Some(BoolValue { value: true }));
        assert_eq!(
            out.forward_not_matching_preflights,
            Some(BoolValue { value: true })
        );
        let enabled = out.filter_enabled.unwrap().default_value.unwrap();
        assert_eq!(
            enabled,
            FractionalPercent {
                numerator: 100,
                denominator: DenominatorType::Hundred as i32
            }
        );
    }

    #[test]
    fn cors_deprecated_allow_origin_is_exact_and_ignore_preflights() {
        let c = CorsPolicy {
            allow_origin: vec!["https://old.example".into()],
            unmatched_preflights: Some("IGNORE".into()),
            ..Default::default()
        };
        let out = translate_cors(&c).unwrap();
        assert_eq!(
            out.allow_origin_string_match,
            [StringMatcher {
                match_pattern: Some(MatchPattern::Exact("https://old.example".into())),
                ignore_case: false
            }]
        );
        assert_eq!(
            out.forward_not_matching_preflights,
            Some(BoolValue { value: false })
        );
        assert_eq!(out.max_age, "");
    }

    #[test]
    fn http_filters_order_router_last_and_configs_decode() {
        let all = http_filters(HttpFilterNeeds::ALL);
        let names: Vec<_> = all.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, [FAULT_FILTER, CORS_FILTER, ROUTER_FILTER]);
        let any = |f: &HttpFilter| match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(a)) => a.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            any(&all[0]).type_url,
            "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
        );
        assert_eq!(
            any(&all[1]).type_url,
            "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
        );
        assert_eq!(
            any(&all[2]).type_url,
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        );
        HttpFault::decode(any(&all[0]).value.as_slice()).unwrap();
        let only_router = http_filters(HttpFilterNeeds::default());
        assert_eq!(only_router.len(), 1);
        assert_eq!(only_router[0].name, ROUTER_FILTER);
        let cors_only = http_filters(HttpFilterNeeds {
            fault: false,
            cors: true,
        });
        assert_eq!(
            cors_only
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>(),
            [CORS_FILTER, ROUTER_FILTER]
        );
    }
}
