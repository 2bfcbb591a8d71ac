//! The `pilotfish` command: serve, validate, render, bootstrap, crds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use pilotfish::config::istio::Duration;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::serve::{ConfigSource, Listeners, ServeOptions};
use pilotfish::operator::OperatorOptions;
use pilotfish::source::kubernetes::KubeOptions;
use pilotfish::source::Directory;
use pilotfish::xds;

#[derive(Parser)]
#[command(name = "pilotfish", version, about = "An Envoy xDS control plane that serves Istio's APIs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct MeshArgs {
    /// DNS suffix of Kubernetes service host names.
    #[arg(long, default_value = "cluster.local")]
    domain_suffix: String,
    /// Namespace whose config applies mesh-wide.
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
}

impl MeshArgs {
    fn mesh(&self) -> MeshConfig {
        MeshConfig {
            domain_suffix: self.domain_suffix.clone(),
            root_namespace: self.root_namespace.clone(),
            ..MeshConfig::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve xDS for the config of a Kubernetes cluster (in-cluster, `--kubeconfig`, or the
    /// KUBECONFIG environment), or of a directory of YAML (`--config-dir`), following changes.
    Serve {
        /// Read config from this directory instead of the Kubernetes API.
        #[arg(long, conflicts_with = "kubeconfig")]
        config_dir: Option<PathBuf>,
        /// Kubeconfig file to reach the API server with (default: in-cluster, then KUBECONFIG).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Plaintext ADS address (istiod's 15010).
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds_address: SocketAddr,
        /// Address of `/ready` and `/version` (istiod's 8080); not served when unset.
        #[arg(long)]
        http_address: Option<SocketAddr>,
        /// Address of the validating admission webhook (istiod's 15017; Kubernetes only).
        #[arg(long, conflicts_with = "config_dir")]
        webhook_address: Option<SocketAddr>,
        /// The control plane's namespace: Lease, CA Secret, the `istiod` Service.
        #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
        namespace: String,
        /// This replica's identity in leader election (default: the host name).
        #[arg(long, env = "POD_NAME")]
        pod_name: Option<String>,
        /// Changes that follow a push within this window are coalesced into one push.
        #[arg(long, default_value = "100ms", value_parser = parse_duration)]
        debounce: Duration,
        #[command(flatten)]
        mesh: MeshArgs,
    },
    /// Check files or directories as istiod's validating webhook would; exits non-zero on errors.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print, as config_dump JSON, exactly what one proxy would be sent.
    Render {
        #[arg(long)]
        config_dir: PathBuf,
        /// Istio node id, e.g. router~10.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local
        #[arg(long)]
        node_id: String,
        /// The proxy's labels, k=v,k2=v2 (what istio-agent sends as LABELS).
        #[arg(long, value_parser = parse_labels, default_value = "")]
        labels: BTreeMap<String, String>,
        #[command(flatten)]
        mesh: MeshArgs,
    },
    /// Print an Envoy bootstrap (JSON) that points ADS at pilotfish.
    Bootstrap {
        #[arg(long)]
        node_id: String,
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds_address: String,
        #[arg(long, value_parser = parse_labels, default_value = "")]
        labels: BTreeMap<String, String>,
        /// Namespace sent as NAMESPACE metadata (default: from the node id).
        #[arg(long)]
        namespace: Option<String>,
        /// node.cluster (default: `<workload>.<namespace>` from the node id, as istio-agent sends).
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, default_value_t = 15000)]
        admin_port: u16,
    },
    /// Print Istio-compatible CustomResourceDefinitions for the kinds pilotfish serves.
    Crds {
        /// Write one `<group>_<plural>.yaml` per kind into this directory instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    Duration::parse(s)
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    pilotfish::bootstrap::parse_labels(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { config_dir, kubeconfig, xds_address, http_address, webhook_address, namespace, pod_name, debounce, mesh } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let source = match config_dir {
                    Some(dir) => ConfigSource::Directory(dir),
                    None => ConfigSource::Kubernetes {
                        client: kube_client(kubeconfig.as_deref()).await?,
                        options: KubeOptions { mesh_namespace: mesh.root_namespace.clone(), ..KubeOptions::default() },
                        operator: OperatorOptions {
                            namespace,
                            identity: pod_name.unwrap_or_else(host_name),
                            domain_suffix: mesh.domain_suffix.clone(),
                            ..OperatorOptions::default()
                        },
                    },
                };
                let options = ServeOptions { source, debounce: debounce.as_std(), mesh: mesh.mesh() };
                serve(options, xds_address, http_address, webhook_address).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { paths } => validate(&paths),
        Command::Render { config_dir, node_id, labels, mesh } => {
            let proxy = Proxy::from_id(&node_id)?.with_labels(labels);
            let (dump, diagnostics) = pilotfish::render::render_dir(&config_dir, &proxy, &mesh.mesh())?;
            for d in &diagnostics {
                eprintln!("{d}");
            }
            println!("{}", serde_json::to_string_pretty(&dump)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap { node_id, xds_address, labels, namespace, cluster, admin_port } => {
            let mut options = pilotfish::bootstrap::BootstrapOptions::for_node(&node_id, &xds_address);
            options.labels = labels;
            options.admin_port = admin_port;
            options.namespace = namespace.unwrap_or(options.namespace);
            options.cluster = cluster.unwrap_or(options.cluster);
            let bootstrap = pilotfish::bootstrap::bootstrap(&options)?;
            println!("{}", serde_json::to_string_pretty(&bootstrap)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds { out } => {
            let crds = pilotfish::crd::generate()?;
            match out {
                Some(dir) => pilotfish::crd::write_dir(&dir, &crds)?.iter().for_each(|p| eprintln!("wrote {}", p.display())),
                None => print!("{}", pilotfish::crd::to_multi_document(&crds)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(paths: &[PathBuf]) -> Result<ExitCode> {
    let mut errors = 0;
    let mut warnings = 0;
    for path in paths {
        let diagnostics = if path.is_dir() {
            // A directory is a whole config: check references between its objects too.
            let (snapshot, mut diagnostics) = pilotfish::source::watch::read_once(path)?;
            diagnostics.extend(pilotfish::index::Index::build(&snapshot, &MeshConfig::default()).diagnostics);
            diagnostics
        } else if pilotfish::source::directory::is_manifest(path) {
            let mut dir = Directory::new(path.parent().unwrap_or(path));
            dir.reload(path);
            dir.entries().1
        } else {
            anyhow::bail!("{}: not a .yaml, .yml or .json file", path.display());
        };
        for d in &diagnostics {
            println!("{d}");
        }
        let e = diagnostics.iter().filter(|d| d.is_error()).count();
        errors += e;
        warnings += diagnostics.len() - e;
    }
    println!("{errors} error(s), {warnings} warning(s)");
    Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn serve(options: ServeOptions, xds: SocketAddr, http: Option<SocketAddr>, webhook: Option<SocketAddr>) -> Result<()> {
    let bind = |address: SocketAddr, what: &str| listen(address).with_context(|| format!("binding the {what} address {address}"));
    let listeners = Listeners {
        xds: bind(xds, "xDS")?,
        status: http.map(|a| bind(a, "HTTP")).transpose()?,
        webhook: webhook.map(|a| bind(a, "webhook")).transpose()?,
    };
    pilotfish::serve::serve(options, listeners, xds::Connections::new(), shutdown_signal()).await?;
    Ok(())
}

/// The host name, the election identity outside a pod (inside one, POD_NAME is set).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "pilotfish".into())
}

/// A client for `--kubeconfig`, else in-cluster config, else `KUBECONFIG`/`~/.kube/config`.
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await.with_context(|| format!("using {}", path.display()))?
        }
        None => kube::Config::infer().await.context("finding the Kubernetes API (in-cluster, KUBECONFIG or ~/.kube/config); use --config-dir to serve a directory instead")?,
    };
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

/// Proxies reconnect all at once when pilotfish restarts or a fleet scales up; tokio's
/// `TcpListener::bind` listens with a backlog of 1,024, which 5,000 simultaneous connects
/// overflow (the kernel drops SYNs and clients retry after a second). The kernel caps this at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted server can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
    tracing::info!("shutting down");
}
