//! The `pilotfish` command: serve, validate, render, bootstrap, crds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use pilotfish::config::istio::Duration;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::operator::OperatorOptions;
use pilotfish::serve::{CaOptions, ConfigSource, Listeners, ServeOptions};
use pilotfish::source::Directory;
use pilotfish::source::kubernetes::KubeOptions;
use pilotfish::xds;

#[derive(Parser)]
#[command(
    name = "pilotfish",
    version,
    about = "An Envoy xDS control plane that serves Istio's APIs"
)]
struct Cli {
    /// Log one JSON object per line instead of text (istiod's `--log_as_json`); the level
    /// filter is `RUST_LOG` (`info` when unset), e.g. `pilotfish::xds=debug,info`.
    #[arg(long, global = true, env = "PILOTFISH_LOG_AS_JSON")]
    log_as_json: bool,
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
    /// The mesh's trust domain: the `spiffe://<trust-domain>/…` of every workload identity.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

#[derive(clap::Args, Clone)]
struct CaArgs {
    /// istiod's plugged-in CA (`ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`),
    /// used when present.
    #[arg(long, default_value = pilotfish::ca::plugged::DEFAULT_DIR)]
    cacerts_dir: PathBuf,
    /// Without a cluster: where the self-signed CA root is kept (created on first use).
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// Lifetime of the certificates proxies get over SDS (istiod's DEFAULT_WORKLOAD_CERT_TTL).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    workload_cert_ttl: Duration,
    /// The longest certificate the CA API signs (istiod's MAX_WORKLOAD_CERT_TTL).
    #[arg(long, default_value = "2160h", value_parser = parse_duration)]
    max_workload_cert_ttl: Duration,
}

impl MeshArgs {
    fn mesh(&self) -> MeshConfig {
        MeshConfig {
            domain_suffix: self.domain_suffix.clone(),
            root_namespace: self.root_namespace.clone(),
            trust_domain: self.trust_domain.clone(),
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
        /// Plaintext ADS address (istiod's 15010). Proxies here are never sent secrets.
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds_address: SocketAddr,
        /// TLS address of ADS for authenticated proxies, with their certificates over SDS, and
        /// of Istio's CA API (istiod's 15012); not served when unset.
        #[arg(long)]
        secure_xds_address: Option<SocketAddr>,
        /// Address of `/ready`, `/version`, `/metrics` and `/debug/*` (istiod's 8080); not
        /// served when unset.
        #[arg(long)]
        http_address: Option<SocketAddr>,
        /// Address of `/metrics` alone (istiod's monitoring port 15014, where Istio's scrape
        /// configs look); not served when unset.
        #[arg(long)]
        monitoring_address: Option<SocketAddr>,
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
        /// Answer the `/debug/*` endpoints on the HTTP address for every client, not only
        /// loopback ones (istiod's ENABLE_DEBUG_ON_HTTP).
        #[arg(long, env = "ENABLE_DEBUG_ON_HTTP")]
        debug_remote: bool,
        #[command(flatten)]
        mesh: MeshArgs,
        #[command(flatten)]
        ca: CaArgs,
    },
    /// The CA without a cluster: issue a workload certificate from `--ca-dir`, e.g. the client
    /// certificate a stock Envoy presents on the TLS xDS port.
    #[command(subcommand)]
    Ca(CaCommand),
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
        /// Render as for a proxy authenticated on the TLS port as this service account of its
        /// namespace (mTLS, gateway certificates); without it, as on the plaintext port.
        #[arg(long)]
        service_account: Option<String>,
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
        /// istio-proxy's Prometheus port: `0.0.0.0:PORT/stats/prometheus`; 0 turns it off
        /// (needed when several Envoys share one network namespace).
        #[arg(long, default_value_t = pilotfish::bootstrap::DEFAULT_STATS_PORT)]
        stats_port: u16,
        /// istio-proxy's health port: `0.0.0.0:PORT/healthz/ready`, 200 once Envoy has its
        /// config; 0 turns it off.
        #[arg(long, default_value_t = pilotfish::bootstrap::DEFAULT_HEALTH_PORT)]
        health_port: u16,
        /// Connect over TLS (pilotfish's TLS xDS port), trusting this mesh root.
        #[arg(long)]
        xds_root_cert: Option<String>,
        /// The name on the xDS server's certificate.
        #[arg(long, default_value = "istiod.istio-system.svc")]
        xds_server_name: String,
        /// A directory with `cert-chain.pem` and `key.pem` (from `pilotfish ca issue`): the
        /// proxy's client certificate on the TLS port.
        #[arg(long, requires = "xds_root_cert")]
        xds_client_cert_dir: Option<PathBuf>,
        /// A file holding a service-account token for audience `istio-ca`, sent as
        /// `authorization` metadata on the TLS port.
        #[arg(long, requires = "xds_root_cert")]
        xds_token_file: Option<PathBuf>,
    },
    /// The sync status of every connected proxy, from the control plane's CSDS service, as
    /// `istioctl proxy-status` prints it.
    ProxyStatus {
        /// The control plane's plaintext xDS address.
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds_address: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: StatusOutput,
    },
    /// One connected proxy's config, from the control plane's CSDS service, as `istioctl
    /// proxy-config` prints it.
    ProxyConfig {
        #[arg(value_enum)]
        kind: ConfigKind,
        /// The proxy's node id, as `proxy-status` lists connections
        /// (`sidecar~10.0.0.1~app-1.default~default.svc.cluster.local`).
        proxy_id: String,
        /// The control plane's plaintext xDS address.
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds_address: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: ConfigOutput,
    },
    /// Print Istio-compatible CustomResourceDefinitions for the kinds pilotfish serves.
    Crds {
        /// Write one `<group>_<plural>.yaml` per kind into this directory instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ConfigKind {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    Secrets,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ConfigOutput {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StatusOutput {
    Table,
    Json,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Write `cert-chain.pem`, `key.pem` and `root-cert.pem` for one identity into `--out`.
    Issue {
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        service_account: String,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: Duration,
        #[arg(long)]
        out: PathBuf,
    },
}

fn proxy_status(xds_address: &str, output: StatusOutput) -> Result<ExitCode> {
    use pilotfish::xds::csds::{client, table};
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let response = runtime.block_on(client::fetch(xds_address, client::status_request()))?;
    match output {
        StatusOutput::Table => {
            print!("{}", table::render(&table::rows(&response, xds_address)));
            for line in table::rejections(&response) {
                eprintln!("{line}");
            }
        }
        StatusOutput::Json => {
            let bytes = prost::Message::encode_to_vec(&response);
            let json = pilotfish::debug::json::message_to_json(
                "envoy.service.status.v3.ClientStatusResponse",
                &bytes,
            )?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn proxy_config(
    kind: ConfigKind,
    proxy_id: &str,
    xds_address: &str,
    output: ConfigOutput,
) -> Result<ExitCode> {
    use pilotfish::xds::csds::client;
    use pilotfish::xds::csds::proxy_config::{self, Kind};
    let kind = match kind {
        ConfigKind::Listeners => Kind::Listeners,
        ConfigKind::Routes => Kind::Routes,
        ConfigKind::Clusters => Kind::Clusters,
        ConfigKind::Endpoints => Kind::Endpoints,
        ConfigKind::Secrets => Kind::Secrets,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let response =
        runtime.block_on(client::fetch(xds_address, client::config_request(proxy_id)))?;
    let Some(config) = response.config.first() else {
        anyhow::bail!("proxy {proxy_id:?} is not connected to the control plane at {xds_address}");
    };
    let json = proxy_config::client_config_json(config)?;
    match output {
        ConfigOutput::Table => print!("{}", proxy_config::render(&proxy_config::rows(kind, &json))),
        ConfigOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&proxy_config::config_dump(kind, &json))?
        ),
        ConfigOutput::Yaml => print!(
            "{}",
            serde_saphyr::to_string(&proxy_config::config_dump(kind, &json))?
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    Duration::parse(s)
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    pilotfish::bootstrap::parse_labels(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    if cli.log_as_json {
        logs.json().flatten_event(true).with_span_list(false).init();
    } else {
        logs.init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config_dir,
            kubeconfig,
            xds_address,
            secure_xds_address,
            http_address,
            monitoring_address,
            webhook_address,
            namespace,
            pod_name,
            debounce,
            debug_remote,
            mesh,
            ca,
        } => {
            let ca = CaOptions {
                cacerts_dir: ca.cacerts_dir,
                root_dir: ca.ca_dir,
                workload_ttl: ca.workload_cert_ttl.as_std(),
                max_workload_ttl: ca.max_workload_cert_ttl.as_std(),
                dns_names: pilotfish::security::tls_port::dns_names(
                    "istiod",
                    &namespace,
                    &mesh.domain_suffix,
                ),
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let source = match config_dir {
                    Some(dir) => ConfigSource::Directory(dir),
                    None => ConfigSource::Kubernetes {
                        client: kube_client(kubeconfig.as_deref()).await?,
                        options: KubeOptions {
                            mesh_namespace: mesh.root_namespace.clone(),
                            ..KubeOptions::default()
                        },
                        operator: OperatorOptions {
                            namespace,
                            identity: pod_name.unwrap_or_else(host_name),
                            domain_suffix: mesh.domain_suffix.clone(),
                            trust_domain: mesh.trust_domain.clone(),
                            ..OperatorOptions::default()
                        },
                    },
                };
                let options = ServeOptions {
                    source,
                    debounce: debounce.as_std(),
                    mesh: mesh.mesh(),
                    ca,
                    debug_remote,
                };
                let addresses = Addresses {
                    xds: xds_address,
                    secure_xds: secure_xds_address,
                    http: http_address,
                    monitoring: monitoring_address,
                    webhook: webhook_address,
                };
                serve(options, addresses).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { paths } => validate(&paths),
        Command::ProxyStatus {
            xds_address,
            output,
        } => proxy_status(&xds_address, output),
        Command::ProxyConfig {
            kind,
            proxy_id,
            xds_address,
            output,
        } => proxy_config(kind, &proxy_id, &xds_address, output),
        Command::Render {
            config_dir,
            node_id,
            labels,
            service_account,
            mesh,
        } => {
            let mut proxy = Proxy::from_id(&node_id)?.with_labels(labels);
            if let Some(account) = service_account {
                proxy.identity = Some(pilotfish::ca::SpiffeId::new(
                    &mesh.trust_domain,
                    &proxy.namespace,
                    account,
                )?);
            }
            let (dump, diagnostics) =
                pilotfish::render::render_dir(&config_dir, &proxy, &mesh.mesh())?;
            for d in &diagnostics {
                eprintln!("{d}");
            }
            println!("{}", serde_json::to_string_pretty(&dump)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap {
            node_id,
            xds_address,
            labels,
            namespace,
            cluster,
            admin_port,
            stats_port,
            health_port,
            xds_root_cert,
            xds_server_name,
            xds_client_cert_dir,
            xds_token_file,
        } => {
            let mut options =
                pilotfish::bootstrap::BootstrapOptions::for_node(&node_id, &xds_address);
            if let Some(root_cert) = xds_root_cert {
                let token = match xds_token_file {
                    Some(path) => Some(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?
                            .trim()
                            .to_string(),
                    ),
                    None => None,
                };
                let file = |dir: &std::path::Path, name: &str| dir.join(name).display().to_string();
                options.tls = Some(pilotfish::bootstrap::XdsTls {
                    root_cert,
                    server_name: xds_server_name,
                    client_cert: xds_client_cert_dir
                        .map(|d| (file(&d, "cert-chain.pem"), file(&d, "key.pem"))),
                    token,
                });
            }
            options.labels = labels;
            options.admin_port = admin_port;
            options.ports =
                pilotfish::bootstrap::DataPlanePorts::from_flags(stats_port, health_port);
            options.namespace = namespace.unwrap_or(options.namespace);
            options.cluster = cluster.unwrap_or(options.cluster);
            let bootstrap = pilotfish::bootstrap::bootstrap(&options)?;
            println!("{}", serde_json::to_string_pretty(&bootstrap)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca(CaCommand::Issue {
            ca_dir,
            namespace,
            service_account,
            trust_domain,
            ttl,
            out,
        }) => {
            ca_issue(
                &ca_dir,
                &namespace,
                &service_account,
                &trust_domain,
                ttl.as_std(),
                &out,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds { out } => {
            let crds = pilotfish::crd::generate()?;
            match out {
                Some(dir) => pilotfish::crd::write_dir(&dir, &crds)?
                    .iter()
                    .for_each(|p| eprintln!("wrote {}", p.display())),
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
            diagnostics.extend(
                pilotfish::index::Index::build(&snapshot, &MeshConfig::default()).diagnostics,
            );
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
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

struct Addresses {
    xds: SocketAddr,
    secure_xds: Option<SocketAddr>,
    http: Option<SocketAddr>,
    monitoring: Option<SocketAddr>,
    webhook: Option<SocketAddr>,
}

async fn serve(options: ServeOptions, addresses: Addresses) -> Result<()> {
    let bind = |address: SocketAddr, what: &str| {
        listen(address).with_context(|| format!("binding the {what} address {address}"))
    };
    let listeners = Listeners {
        xds: bind(addresses.xds, "xDS")?,
        secure_xds: addresses
            .secure_xds
            .map(|a| bind(a, "TLS xDS"))
            .transpose()?,
        status: addresses.http.map(|a| bind(a, "HTTP")).transpose()?,
        monitoring: addresses
            .monitoring
            .map(|a| bind(a, "monitoring"))
            .transpose()?,
        webhook: addresses.webhook.map(|a| bind(a, "webhook")).transpose()?,
    };
    pilotfish::serve::serve(
        options,
        listeners,
        xds::Connections::new(),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// A workload certificate and key from the file-mode CA, for a proxy's client certificate.
fn ca_issue(
    ca_dir: &std::path::Path,
    namespace: &str,
    account: &str,
    trust_domain: &str,
    ttl: std::time::Duration,
    out: &std::path::Path,
) -> Result<()> {
    let authority = pilotfish::ca::file::load_or_create(ca_dir, trust_domain)?;
    let id = pilotfish::ca::SpiffeId::new(trust_domain, namespace, account)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = authority.sign_workload_key(&key, &id, ttl)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, contents: &str| {
        std::fs::write(out.join(name), contents)
            .with_context(|| format!("writing {}", out.join(name).display()))
    };
    write("cert-chain.pem", &cert.cert_chain.concat())?;
    write("root-cert.pem", authority.root_pem())?;
    // The key is written readable by its owner only; Envoy reads it as the same user.
    let key_path = out.join("key.pem");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)
            .with_context(|| format!("writing {}", key_path.display()))?;
        f.write_all(key.serialize_pem().as_bytes())?;
    }
    eprintln!("issued {id} into {}", out.display());
    Ok(())
}

/// The host name, the election identity outside a pod (inside one, POD_NAME is set).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "pilotfish".into())
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
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
