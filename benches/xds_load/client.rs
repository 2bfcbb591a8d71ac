//! One simulated Envoy: its own HTTP/2 connection, an ADS stream, and Envoy's request pattern:
//! wildcard CDS and LDS, then EDS for the EDS clusters and RDS for the listeners' route
//! configs, ACKing everything. What it saw goes into [`ClientStats`], read by the driver.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::wire;

/// The four types, as indexes into per-type arrays.
pub const CDS: usize = 0;
pub const EDS: usize = 1;
pub const LDS: usize = 2;
pub const RDS: usize = 3;
pub const TYPES: [&str; 4] = ["CDS", "EDS", "LDS", "RDS"];
const URLS: [&str; 4] = [
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
];

/// Envoy's default HTTP/2 windows are 256 MiB; this is plenty for any response here and
/// keeps a full CDS from waiting on WINDOW_UPDATE round trips.
const WINDOW: u32 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sotw,
    Delta,
}

#[derive(Debug, Clone)]
pub struct Ack {
    pub version: String,
    pub at: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The last response ACKed, per type (SotW `version_info`, delta `system_version_info`).
    pub acked: [Option<Ack>; 4],
    /// EDS names the client asked for, and how many of them it holds an assignment for.
    pub eds_wanted: usize,
    pub eds_held: usize,
    pub rds_wanted: usize,
    /// When it first had ACKed all four types with every assignment in hand.
    pub converged_at: Option<Instant>,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct ClientStats {
    /// Responses and resources received, per type.
    pub responses: [AtomicU64; 4],
    pub resources: [AtomicU64; 4],
    /// Connection attempts that failed before the first response and were retried.
    pub retries: AtomicU64,
    progress: Mutex<Progress>,
}

impl ClientStats {
    pub fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn counts(&self) -> [[u64; 4]; 2] {
        let load = |a: &[AtomicU64; 4]| std::array::from_fn(|t| a[t].load(Ordering::Relaxed));
        [load(&self.responses), load(&self.resources)]
    }

    fn received(&self, ty: usize, resources: usize) {
        self.responses[ty].fetch_add(1, Ordering::Relaxed);
        self.resources[ty].fetch_add(resources as u64, Ordering::Relaxed);
    }

    fn acked(&self, ty: usize, version: String, eds: (usize, usize), rds_wanted: usize) {
        let mut p = self.progress();
        p.acked[ty] = Some(Ack {
            version,
            at: Instant::now(),
        });
        (p.eds_wanted, p.eds_held) = eds;
        p.rds_wanted = rds_wanted;
        let complete =
            p.acked.iter().all(Option::is_some) && p.eds_wanted > 0 && p.eds_held == p.eds_wanted;
        if complete && p.converged_at.is_none() {
            p.converged_at = Some(Instant::now());
        }
    }
}

/// Runs one proxy until its stream ends; how it ended goes into `stats`. Like Envoy, a proxy
/// whose connection fails before its first response tries again after a backoff (a burst of
/// thousands of connects can overflow the server's listen backlog); each retry is counted.
pub async fn run(
    index: usize,
    addr: SocketAddr,
    mode: Mode,
    node: Node,
    stats: Arc<ClientStats>,
    tls: Option<Arc<rustls::ClientConfig>>,
) {
    let mut attempt = 0;
    let error = loop {
        let result = match mode {
            Mode::Sotw => sotw(&node, addr, &stats, tls.clone()).await,
            Mode::Delta => delta(&node, addr, &stats, tls.clone()).await,
        };
        let error = match result {
            Ok(()) => "stream ended by the server".to_string(),
            Err(e) => format!("{e:#}"),
        };
        let answered = stats
            .responses
            .iter()
            .any(|r| r.load(Ordering::Relaxed) > 0);
        if answered || attempt >= MAX_RETRIES {
            break error;
        }
        attempt += 1;
        stats.retries.fetch_add(1, Ordering::Relaxed);
        let jitter = (index % 100) as u64;
        tokio::time::sleep(Duration::from_millis(250 * attempt + jitter)).await;
    };
    stats.progress().error = Some(error);
}

const MAX_RETRIES: u64 = 5;

/// Each client its own `Channel`, so its own TCP connection and HTTP/2 session.
async fn connect(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<AggregatedDiscoveryServiceClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW);
    let channel = match tls {
        Some(config) => super::tls::connect(endpoint, addr, config).await?,
        None => endpoint.connect().await.context("connecting")?,
    };
    Ok(AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX))
}

fn type_index(url: &str) -> Result<usize> {
    URLS.iter()
        .position(|u| *u == url)
        .with_context(|| format!("unexpected type {url}"))
}

/// EDS names of a set of clusters.
fn eds_names<'a>(clusters: impl IntoIterator<Item = &'a Any>) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for any in clusters {
        names.extend(wire::eds_service_name(&any.value)?);
    }
    Ok(names)
}

fn rds_names<'a>(listeners: impl IntoIterator<Item = &'a Any>) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for any in listeners {
        names.extend(wire::rds_names(any)?);
    }
    Ok(names)
}

/// Per-type SotW state: the subscription and the last response ACKed.
#[derive(Default)]
struct SotwType {
    names: Vec<String>,
    version: String,
    nonce: String,
}

async fn sotw(
    node: &Node,
    addr: SocketAddr,
    stats: &ClientStats,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<()> {
    let mut client = connect(addr, tls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let request = |ty: usize, t: &SotwType| DiscoveryRequest {
        type_url: URLS[ty].to_string(),
        version_info: t.version.clone(),
        response_nonce: t.nonce.clone(),
        resource_names: t.names.clone(),
        ..Default::default()
    };
    let mut types: [SotwType; 4] = Default::default();
    tx.send(DiscoveryRequest {
        node: Some(node.clone()),
        ..request(CDS, &types[CDS])
    })?;
    tx.send(request(LDS, &types[LDS]))?;
    let mut responses = client
        .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut eds_held = BTreeSet::new();
    while let Some(response) = responses.message().await? {
        let DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        let ty = type_index(&type_url)?;
        stats.received(ty, resources.len());
        // Envoy asks for what a CDS or LDS response names before ACKing it.
        let dependent = match ty {
            CDS => Some((EDS, eds_names(&resources)?)),
            LDS => Some((RDS, rds_names(&resources)?)),
            EDS => {
                for any in &resources {
                    eds_held.insert(wire::name(&any.value)?);
                }
                None
            }
            _ => None,
        };
        if let Some((dep, names)) = dependent {
            let names: Vec<String> = names.into_iter().collect();
            if names != types[dep].names {
                types[dep].names = names;
                tx.send(request(dep, &types[dep]))?;
            }
        }
        types[ty].version = version_info.clone();
        types[ty].nonce = nonce;
        tx.send(request(ty, &types[ty]))?;
        let wanted = &types[EDS].names;
        let held = wanted.iter().filter(|n| eds_held.contains(*n)).count();
        stats.acked(
            ty,
            version_info,
            (wanted.len(), held),
            types[RDS].names.len(),
        );
    }
    Ok(())
}

/// Per-type delta state: what the proxy subscribed to (by name) and holds.
#[derive(Default)]
struct DeltaType {
    subscribed: BTreeSet<String>,
    /// Resource name → the names it makes us depend on (CDS → EDS, LDS → RDS).
    held: BTreeMap<String, BTreeSet<String>>,
}

async fn delta(
    node: &Node,
    addr: SocketAddr,
    stats: &ClientStats,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<()> {
    let mut client = connect(addr, tls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let request = |ty: usize| DeltaDiscoveryRequest {
        type_url: URLS[ty].to_string(),
        ..Default::default()
    };
    // An initial request naming nothing is a wildcard subscription, as Envoy sends it.
    tx.send(DeltaDiscoveryRequest {
        node: Some(node.clone()),
        ..request(CDS)
    })?;
    tx.send(request(LDS))?;
    let mut responses = client
        .delta_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut types: [DeltaType; 4] = Default::default();
    while let Some(response) = responses.message().await? {
        let DeltaDiscoveryResponse {
            system_version_info,
            resources,
            type_url,
            nonce,
            removed_resources,
            ..
        } = response;
        let ty = type_index(&type_url)?;
        stats.received(ty, resources.len());
        let state = &mut types[ty];
        for name in &removed_resources {
            state.held.remove(name);
        }
        for resource in &resources {
            let Some(any) = &resource.resource else {
                bail!("{} {} without a body", TYPES[ty], resource.name)
            };
            let depends = match ty {
                CDS => eds_names([any])?,
                LDS => rds_names([any])?,
                _ => BTreeSet::new(),
            };
            state.held.insert(resource.name.clone(), depends);
        }
        let dependent = match ty {
            CDS => Some(EDS),
            LDS => Some(RDS),
            _ => None,
        };
        if let Some(dep) = dependent {
            let wanted: BTreeSet<String> = types[ty].held.values().flatten().cloned().collect();
            let sub = &mut types[dep].subscribed;
            let subscribe: Vec<String> = wanted.difference(sub).cloned().collect();
            let unsubscribe: Vec<String> = sub.difference(&wanted).cloned().collect();
            if !subscribe.is_empty() || !unsubscribe.is_empty() {
                *sub = wanted;
                tx.send(DeltaDiscoveryRequest {
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..request(dep)
                })?;
            }
        }
        tx.send(DeltaDiscoveryRequest {
            response_nonce: nonce,
            ..request(ty)
        })?;
        let eds = &types[EDS];
        let held = eds
            .subscribed
            .iter()
            .filter(|n| eds.held.contains_key(*n))
            .count();
        stats.acked(
            ty,
            system_version_info,
            (eds.subscribed.len(), held),
            types[RDS].subscribed.len(),
        );
    }
    Ok(())
}
