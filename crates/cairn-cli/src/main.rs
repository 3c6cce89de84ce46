//! `cairn`: run a dev server on the embedded store, and drive any node through its HTTP API.
//!
//! ```text
//! cairn server start-dev [--db ./cairn-data] [--port 7280]
//! cairn workflow start --type hello --input '"Ada"' --wait
//! cairn workflow list | describe ID | show ID | result ID | signal ID NAME | query ID NAME
//! cairn workflow update ID NAME --args JSON [--update-id U] [--wait accepted]
//! cairn workflow cancel ID | terminate ID
//! cairn workflow list --query "WorkflowType = 'hello' AND ExecutionStatus = 'Running'" | count
//! cairn schedule create ID --type hello --cron '0 9 * * *' | list | describe ID | pause ID
//! cairn schedule unpause ID | trigger ID | backfill ID --start T --end T | delete ID
//! cairn cluster status
//! ```

/// jemalloc rather than glibc's malloc: the runtime allocates many small, short-lived buffers
/// (keys, encoded records, messages) across threads, where glibc's arenas spend a third of
/// the CPU of a busy node (docs/BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `println!` that ends the process quietly when stdout is closed (`cairn workflow list |
/// head -1`) instead of panicking, and with an error for any other write failure.
macro_rules! say {
    ($($arg:tt)*) => {
        write_line(format_args!($($arg)*))
    };
}

fn write_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {error}");
        std::process::exit(1);
    }
}

mod demo;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// Largest page the API returns (`cairn_runtime::LIST_PAGE_SIZE_MAX`).
const LIST_PAGE_SIZE_MAX: usize = 1_000;

#[derive(Parser, Debug)]
#[command(name = "cairn", about = "Cairn: durable workflows in Rust", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Talk to a node's HTTP API.
    Workflow(WorkflowArgs),
    /// The cluster, as any node sees it.
    Cluster(ClusterArgs),
    /// Schedules: start workflows on a cadence.
    Schedule(ScheduleArgs),
}

#[derive(Args, Debug)]
struct ScheduleArgs {
    #[command(flatten)]
    client: ClientOptions,
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Subcommand, Debug)]
enum ScheduleCommand {
    /// Create a schedule (give at least one --cron or --every-ms). Started workflows are named
    /// `<ID>-<scheduled time, RFC 3339>`.
    Create {
        #[arg(value_parser = non_empty_id)]
        id: String,
        /// Workflow type to start.
        #[arg(long = "type")]
        workflow_type: String,
        /// Its input, as JSON.
        #[arg(long, default_value = "null")]
        input: String,
        /// Cron expression (5 fields, or 6 with seconds first); repeatable.
        #[arg(long)]
        cron: Vec<String>,
        /// Interval in ms; repeatable.
        #[arg(long = "every-ms")]
        every_ms: Vec<u64>,
        /// IANA time zone of the cron expressions.
        #[arg(long)]
        time_zone: Option<String>,
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        /// RFC 3339: no start before.
        #[arg(long)]
        start_time: Option<String>,
        /// RFC 3339: no start after.
        #[arg(long)]
        end_time: Option<String>,
        /// skip, buffer_one, buffer_all, cancel_other, terminate_other or allow_all.
        #[arg(long)]
        overlap: Option<String>,
        #[arg(long)]
        catchup_window_ms: Option<u64>,
        /// Create it paused, with this note.
        #[arg(long)]
        paused: Option<String>,
    },
    /// Every schedule.
    List,
    /// A schedule: spec, next start times, recent actions.
    Describe {
        #[arg(value_parser = non_empty_id)]
        id: String,
    },
    /// Pause (nothing starts until unpaused).
    Pause {
        #[arg(value_parser = non_empty_id)]
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Unpause (goes on from now).
    Unpause {
        #[arg(value_parser = non_empty_id)]
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Start the workflow now.
    Trigger {
        #[arg(value_parser = non_empty_id)]
        id: String,
        /// Overlap policy for this start (default: the schedule's).
        #[arg(long)]
        overlap: Option<String>,
    },
    /// Start the workflows of every scheduled time in a range.
    Backfill {
        #[arg(value_parser = non_empty_id)]
        id: String,
        /// RFC 3339.
        #[arg(long)]
        start: String,
        /// RFC 3339.
        #[arg(long)]
        end: String,
        /// Overlap policy for these starts (default: the schedule's).
        #[arg(long)]
        overlap: Option<String>,
    },
    /// Delete (workflows it started run on).
    Delete { id: String },
}

#[derive(Args, Debug)]
struct ClusterArgs {
    #[command(flatten)]
    client: ClientOptions,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Nodes (alive, draining, lease expiry), and which node holds each shard at which epoch.
    Status,
}

#[derive(Subcommand, Debug)]
enum ServerCommand {
    /// One node on a production store (`--store fdb:<cluster-file>`) with the HTTP API and the
    /// demo workflows.
    Start(StartArgs),
    /// One node on the embedded store with the HTTP API and the demo workflows (hello,
    /// countdown, approval, remote_hello, noop, three_step) and Temporal's gRPC API. Stops
    /// cleanly on Ctrl-C.
    StartDev(StartDevArgs),
}

#[derive(Args, Debug)]
struct StartDevArgs {
    /// Data directory (created if missing; one server per directory).
    #[arg(long, default_value = "./cairn-data")]
    db: PathBuf,
    #[command(flatten)]
    serve: ServeOptions,
}

#[derive(Args, Debug)]
struct StartArgs {
    /// The store: `fdb:<cluster-file>` (FoundationDB).
    #[arg(long)]
    store: String,
    #[command(flatten)]
    serve: ServeOptions,
}

#[derive(Args, Debug)]
struct ServeOptions {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 7280)]
    port: u16,
    /// This node's id in the cluster; keep it stable across restarts, so a restarted node
    /// takes its shards back at once. Default: `dev` for start-dev, the host name for start.
    #[arg(long, env = "CAIRN_NODE_ID")]
    node_id: Option<String>,
    /// Where other nodes reach this one's API (for forwarded queries). Default:
    /// `http://<listen address>`, or `http://<host name>:<port>` when listening on all
    /// interfaces.
    #[arg(long, env = "CAIRN_ADVERTISE_ADDRESS")]
    advertise_address: Option<String>,
    /// How long a dead node's shards wait before others take them over, in ms.
    #[arg(long, default_value_t = 10_000)]
    lease_timeout_ms: u64,
    /// Shards of the store (fixed when the store is first used; every node must agree).
    #[arg(long, default_value_t = 16)]
    shard_count: u32,
    /// Require `Authorization: Bearer <token>` on every route but /healthz.
    #[arg(long, env = "CAIRN_AUTH_TOKEN")]
    auth_token: Option<String>,
    /// How long closed workflows (records, histories, visibility entries) are kept after they
    /// close: a number with a unit, ms, s, m, h or d (`36h`, `7d`).
    #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
    retention: u64,
    /// Without --auth-token, host names accepted in the Host header besides IP addresses and
    /// localhost (guards against DNS rebinding). Repeatable.
    #[arg(long = "allow-host")]
    allowed_hosts: Vec<String>,
    /// Most API requests served at once; past it requests get 503 with Retry-After.
    #[arg(long, default_value_t = cairn_server::REQUESTS_IN_FLIGHT_MAX)]
    requests_in_flight_max: usize,
    /// Port of Temporal's gRPC API (WorkflowService), on --host (0 picks a free one).
    #[arg(long, default_value_t = cairn_temporal::DEFAULT_PORT)]
    temporal_port: u16,
    /// Do not serve Temporal's gRPC API.
    #[arg(long)]
    no_temporal: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Most verbose log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat, level: &str) -> Result<()> {
    let level: tracing_subscriber::filter::LevelFilter = level.parse().map_err(|_| {
        anyhow::anyhow!("--log-level {level:?} is not one of error, warn, info, debug, trace")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// How to reach a node's API; shared by the client commands.
#[derive(Args, Debug)]
struct ClientOptions {
    /// The node's HTTP address (any node of a cluster).
    #[arg(long, global = true, default_value = "http://127.0.0.1:7280")]
    address: String,
    /// Bearer token, if the node requires one.
    #[arg(long, global = true, env = "CAIRN_AUTH_TOKEN")]
    auth_token: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Args, Debug)]
struct WorkflowArgs {
    #[command(flatten)]
    client: ClientOptions,
    #[command(subcommand)]
    command: WorkflowCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum WorkflowCommand {
    /// Start a workflow.
    Start {
        /// Workflow type (the function's name).
        #[arg(long = "type")]
        workflow_type: String,
        /// Workflow id (default: `<type>-<unix ms>`).
        #[arg(long)]
        id: Option<String>,
        /// Input, as JSON.
        #[arg(long, default_value = "null")]
        input: String,
        /// allow_duplicate, allow_duplicate_failed_only or reject_duplicate.
        #[arg(long)]
        reuse_policy: Option<String>,
        #[arg(long)]
        execution_timeout_ms: Option<u64>,
        /// Run on a cron schedule (Temporal's cron_schedule): `0 9 * * *`, `@hourly`,
        /// `@every 30s`, optionally after `CRON_TZ=<zone> `.
        #[arg(long)]
        cron: Option<String>,
        /// Wait for the result, printing progress.
        #[arg(long)]
        wait: bool,
    },
    /// List workflows.
    List {
        #[arg(long = "type", conflicts_with = "query")]
        workflow_type: Option<String>,
        /// running, completed, failed, canceled, terminated, timed_out or continued_as_new.
        #[arg(long, conflicts_with = "query")]
        status: Option<String>,
        /// A visibility query: WorkflowType = 'Order' AND ExecutionStatus = 'Running' AND
        /// StartTime > '2026-01-01T00:00:00Z' ORDER BY StartTime DESC.
        #[arg(long)]
        query: Option<String>,
        /// At most this many (fetched a page at a time).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// How many workflows match a visibility query.
    Count {
        #[arg(long, default_value = "")]
        query: String,
    },
    /// Status, pending activities, outcome.
    Describe {
        #[arg(value_parser = non_empty_id)]
        id: String,
    },
    /// The history.
    Show {
        #[arg(value_parser = non_empty_id)]
        id: String,
    },
    /// The result (waits up to --wait-ms).
    Result {
        #[arg(value_parser = non_empty_id)]
        id: String,
        #[arg(long, default_value_t = 30_000)]
        wait_ms: u64,
    },
    /// Send a signal.
    Signal {
        #[arg(value_parser = non_empty_id)]
        id: String,
        name: String,
        #[arg(long, default_value = "null")]
        input: String,
    },
    /// Run a query.
    Query {
        #[arg(value_parser = non_empty_id)]
        id: String,
        name: String,
        #[arg(long, default_value = "null")]
        args: String,
    },
    /// Send an update and wait for its result (or, with `--wait accepted`, its acceptance).
    Update {
        #[arg(value_parser = non_empty_id)]
        id: String,
        name: String,
        #[arg(long, default_value = "null")]
        args: String,
        /// Names the update: sending it again joins the first (default: a new id).
        #[arg(long)]
        update_id: Option<String>,
        #[arg(long, default_value = "completed", value_parser = ["accepted", "completed"])]
        wait: String,
    },
    /// Request cancellation.
    Cancel {
        #[arg(value_parser = non_empty_id)]
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End the run at once.
    Terminate {
        #[arg(value_parser = non_empty_id)]
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// The host name of an advertised `http://host:port` address.
fn advertised_host(address: &str) -> Option<String> {
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// A duration with a unit (`500ms`, `30s`, `15m`, `36h`, `7d`) in milliseconds.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a number with a unit (ms, s, m, h, d)"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} needs a unit: ms, s, m, h or d")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A workflow or schedule id argument: refused when empty, with a message saying so.
fn non_empty_id(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("an id must not be empty".into());
    }
    Ok(text.to_string())
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Server(ServerCommand::StartDev(args)) => start_dev(args),
        Command::Server(ServerCommand::Start(args)) => start(args),
        Command::Workflow(args) => workflow(args),
        Command::Cluster(args) => cluster(args),
        Command::Schedule(args) => schedule(args),
    };
    if let Err(error) = outcome {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn start_dev(args: StartDevArgs) -> Result<()> {
    init_logging(args.serve.log_format, &args.serve.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = match cairn_store_embedded::EmbeddedStore::open(cairn_store_embedded::EmbeddedConfig::new(&args.db)) {
            Ok(store) => store,
            Err(cairn::StoreError::Locked { path }) => {
                bail!("the data directory {path} is in use by another process (another cairn server?); stop it or pass a different --db")
            }
            Err(e) => return Err(e).context("opening the data directory"),
        };
        let listener = bind(&args.serve).await?;
        let temporal = bind_temporal(&args.serve).await?;
        let address = listener.local_addr()?;
        let config = node_config(&args.serve, "dev".to_string(), address)?;
        let advertised = config.advertise_address.clone();
        let node = demo::register(cairn::Node::builder()).config(config).start(store).await?;
        say!("cairn dev server listening on http://{address} (data in {})", args.db.display());
        say_temporal(temporal.as_ref())?;
        serve_until_ctrl_c(node, listener, temporal, &args.serve, advertised).await
    })
}

async fn bind(options: &ServeOptions) -> Result<tokio::net::TcpListener> {
    cairn_server::bind(&options.host, options.port)
        .await
        .with_context(|| format!("binding {}:{}", options.host, options.port))
}

/// The listener of Temporal's gRPC API, unless `--no-temporal`.
async fn bind_temporal(options: &ServeOptions) -> Result<Option<tokio::net::TcpListener>> {
    if options.no_temporal {
        return Ok(None);
    }
    cairn_server::bind(&options.host, options.temporal_port)
        .await
        .map(Some)
        .with_context(|| {
            format!(
                "binding Temporal's gRPC port {}:{} (another Temporal server? pass --temporal-port or --no-temporal)",
                options.host, options.temporal_port
            )
        })
}

fn say_temporal(listener: Option<&tokio::net::TcpListener>) -> Result<()> {
    if let Some(listener) = listener {
        say!(
            "Temporal gRPC API (WorkflowService) on {}",
            listener.local_addr()?
        );
    }
    Ok(())
}

/// The host name, for a default node id and advertise address.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

/// The node's settings from the serve options; `bound` is the address actually listened on.
fn node_config(
    options: &ServeOptions,
    default_node_id: String,
    bound: std::net::SocketAddr,
) -> Result<cairn::NodeConfig> {
    let advertise = match &options.advertise_address {
        Some(address) => address.trim_end_matches('/').to_string(),
        None if bound.ip().is_unspecified() => {
            let host = host_name().context(
                "listening on all interfaces and no host name found; pass --advertise-address",
            )?;
            format!("http://{host}:{}", bound.port())
        }
        None => format!("http://{bound}"),
    };
    if !advertise.starts_with("http://") && !advertise.starts_with("https://") {
        bail!("--advertise-address {advertise:?} must start with http:// or https://");
    }
    if options.shard_count == 0 {
        bail!("--shard-count must be at least 1");
    }
    Ok(cairn::NodeConfig {
        node_id: options.node_id.clone().unwrap_or(default_node_id),
        shard_count: options.shard_count,
        lease_timeout_ms: options.lease_timeout_ms,
        retention_ms: options.retention,
        advertise_address: Some(advertise),
        // Activity types the binary does not host wait for Temporal SDK workers.
        remote_activities: !options.no_temporal,
        peers: Some(cairn::PeersHandle(std::sync::Arc::new(
            cairn_server::HttpPeers::new(options.auth_token.clone()),
        ))),
        ..cairn::NodeConfig::default()
    })
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what container runtimes send to stop a node).
async fn stop_requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Serves the API and UI of `node` until Ctrl-C or SIGTERM; then drains the node at once (its
/// shards pass to the other nodes) while the servers let requests in progress finish, and
/// stops.
async fn serve_until_ctrl_c<S: cairn_store::Store>(
    node: cairn::Node<S>,
    listener: tokio::net::TcpListener,
    temporal: Option<tokio::net::TcpListener>,
    options: &ServeOptions,
    advertised: Option<String>,
) -> Result<()> {
    let mut api = cairn_server::ApiOptions::with_token(options.auth_token.clone());
    api.allowed_hosts = options.allowed_hosts.clone();
    // Other nodes reach this one by its advertised name: that Host is this server's own.
    if let Some(host) = advertised.as_deref().and_then(advertised_host) {
        api.allowed_hosts.push(host);
    }
    api.requests_in_flight_max = options.requests_in_flight_max;
    let router = cairn_server::router_with(node.runtime(), api.clone());
    // One stop request ends both servers and drains the node at once: its shards pass to the
    // other nodes while requests in progress finish (for up to SHUTDOWN_GRACE_MS), not after.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let draining = node.runtime();
    tokio::spawn(async move {
        stop_requested().await;
        let _ = stop_tx.send(true);
        draining.drain().await;
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let grpc = temporal.map(|listener| {
        let node = node.runtime();
        let token = options.auth_token.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { cairn_temporal::serve(listener, node, token, stop).await })
    });
    cairn_server::serve(listener, router, &api, stopped(stop_rx)).await?;
    if let Some(grpc) = grpc {
        grpc.await
            .context("Temporal's gRPC server task")?
            .context("Temporal's gRPC server")?;
    }
    // stdout may be gone (a closed pipe) by now; stopping must not depend on it.
    let _ = writeln!(std::io::stdout(), "shutting down");
    node.shutdown().await;
    Ok(())
}

fn start(args: StartArgs) -> Result<()> {
    init_logging(args.serve.log_format, &args.serve.log_level)?;
    let Some(cluster_file) = args.store.strip_prefix("fdb:") else {
        bail!(
            "--store {:?} is not understood; use fdb:<cluster-file> (or `server start-dev` for the embedded store)",
            args.store
        );
    };
    serve_fdb(cluster_file, &args.serve)
}

#[cfg(feature = "fdb")]
fn serve_fdb(cluster_file: &str, options: &ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = cairn_store_fdb::FdbStore::connect(Some(cluster_file))
            .context("connecting to FoundationDB")?;
        let listener = bind(options).await?;
        let temporal = bind_temporal(options).await?;
        let address = listener.local_addr()?;
        let default_id = host_name().unwrap_or_else(|| "node".to_string());
        let config = node_config(options, default_id, address)?;
        let node_id = config.node_id.clone();
        let advertised = config.advertise_address.clone();
        let node = demo::register(cairn::Node::builder())
            .config(config)
            .start(store)
            .await?;
        say!("cairn server {node_id} listening on http://{address} (FoundationDB {cluster_file})");
        say_temporal(temporal.as_ref())?;
        serve_until_ctrl_c(node, listener, temporal, options, advertised).await
    })
}

#[cfg(not(feature = "fdb"))]
fn serve_fdb(_cluster_file: &str, _options: &ServeOptions) -> Result<()> {
    bail!(
        "this cairn binary was built without FoundationDB support; rebuild it with `cargo build -p cairn-cli --features fdb` (needs libclang to build and libfdb_c to run)"
    )
}

struct Api {
    agent: ureq::Agent,
    address: String,
    token: Option<String>,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.address.trim_end_matches('/'));
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("GET", _) => {
                let mut request = self.agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            ("DELETE", _) => {
                let mut request = self.agent.delete(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            (_, body) => {
                let mut request = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.send(body.unwrap_or(&Value::Null).to_string())
            }
        };
        let mut response = response.with_context(|| format!("cannot reach {url}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let code = value["code"].as_str().unwrap_or("error");
            let message = value["message"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            bail!("[{code}] {message}");
        }
        Ok((status, value))
    }
}

fn json_arg(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON: {text}"))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

impl Api {
    fn new(options: ClientOptions) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .build()
            .into();
        Self {
            agent,
            address: options.address,
            token: options.auth_token,
        }
    }
}

fn print_json(value: &Value) {
    say!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn cluster(args: ClusterArgs) -> Result<()> {
    let table = args.client.output == Output::Table;
    let api = Api::new(args.client);
    match args.command {
        ClusterCommand::Status => {
            let (_, status) = api.call("GET", "/api/v1/cluster", None)?;
            if !table {
                print_json(&status);
                return Ok(());
            }
            let now = status["now_unix_ms"].as_u64().unwrap_or(0);
            let in_ms = |at: &Value| match at.as_u64() {
                Some(at) if at >= now => format!("in {} ms", at - now),
                Some(at) => format!("{} ms ago", now - at),
                None => "-".to_string(),
            };
            say!(
                "asked node {}; {} shards; lease timeout {} ms",
                status["this_node"].as_str().unwrap_or("?"),
                status["shard_count"],
                status["lease_timeout_ms"]
            );
            say!(
                "{:<24} {:<7} {:<9} {:<18} {:<28} SHARDS",
                "NODE",
                "STATE",
                "DRAINING",
                "LEASES EXPIRE",
                "ADDRESS"
            );
            for n in status["nodes"].as_array().into_iter().flatten() {
                let shards: Vec<String> = n["shards"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| s.to_string())
                    .collect();
                say!(
                    "{:<24} {:<7} {:<9} {:<18} {:<28} {}",
                    n["node_id"].as_str().unwrap_or(""),
                    if n["alive"].as_bool() == Some(true) {
                        "alive"
                    } else {
                        "dead"
                    },
                    n["draining"].as_bool().unwrap_or(false),
                    in_ms(&n["expires_unix_ms"]),
                    n["address"].as_str().unwrap_or("-"),
                    shards.join(",")
                );
            }
            say!(
                "{:<6} {:<24} {:<6} {:<7} {:<24} {:<10}",
                "SHARD",
                "HOLDER",
                "EPOCH",
                "LIVE",
                "PLACED ON",
                "LAG MS"
            );
            for s in status["shards"].as_array().into_iter().flatten() {
                say!(
                    "{:<6} {:<24} {:<6} {:<7} {:<24} {:<10}",
                    s["shard"].to_string(),
                    s["holder"].as_str().unwrap_or("-"),
                    s["epoch"].to_string(),
                    s["held"].as_bool().unwrap_or(false),
                    s["placed_on"].as_str().unwrap_or("-"),
                    s["lag_ms"].as_u64().unwrap_or(0)
                );
            }
        }
    }
    Ok(())
}

fn schedule(args: ScheduleArgs) -> Result<()> {
    let table = args.client.output == Output::Table;
    let api = Api::new(args.client);
    let path = |id: &str, action: &str| format!("/api/v1/schedules/{}{action}", encode(id));
    match args.command {
        ScheduleCommand::Create {
            id,
            workflow_type,
            input,
            cron,
            every_ms,
            time_zone,
            jitter_ms,
            start_time,
            end_time,
            overlap,
            catchup_window_ms,
            paused,
        } => {
            let body = serde_json::json!({
                "schedule_id": id,
                "workflow_type": workflow_type,
                "input": json_arg("--input", &input)?,
                "cron": cron,
                "intervals": every_ms.iter().map(|ms| serde_json::json!({"every_ms": ms})).collect::<Vec<_>>(),
                "time_zone": time_zone,
                "jitter_ms": jitter_ms,
                "start_time": start_time,
                "end_time": end_time,
                "overlap_policy": overlap,
                "catchup_window_ms": catchup_window_ms,
                "paused": paused.is_some(),
                "note": paused.unwrap_or_default(),
            });
            api.call("POST", "/api/v1/schedules", Some(&body))?;
            if table {
                say!("schedule {id} created");
            }
        }
        ScheduleCommand::List => {
            let (_, list) = api.call("GET", "/api/v1/schedules", None)?;
            if !table {
                print_json(&list);
                return Ok(());
            }
            say!(
                "{:<28} {:<16} {:<7} {:<9} {:<9} SPEC",
                "SCHEDULE ID",
                "TYPE",
                "PAUSED",
                "STARTED",
                "SKIPPED"
            );
            for s in list.as_array().into_iter().flatten() {
                let mut spec: Vec<String> = s["spec"]["cron"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect();
                spec.extend(
                    s["spec"]["intervals"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|i| format!("every {} ms", i["every_ms"])),
                );
                say!(
                    "{:<28} {:<16} {:<7} {:<9} {:<9} {}",
                    s["schedule_id"].as_str().unwrap_or(""),
                    s["workflow_type"].as_str().unwrap_or(""),
                    // A JSON value's Display ignores width: format it as text first.
                    s["paused"].to_string(),
                    s["actions_started"].to_string(),
                    s["actions_skipped"].to_string(),
                    spec.join("; ")
                );
            }
        }
        ScheduleCommand::Describe { id } => {
            let (_, s) = api.call("GET", &path(&id, ""), None)?;
            if !table {
                print_json(&s);
                return Ok(());
            }
            say!(
                "schedule {}  starts {}  overlap {}  paused {}{}",
                s["schedule_id"].as_str().unwrap_or(""),
                s["workflow_type"].as_str().unwrap_or(""),
                s["overlap_policy"].as_str().unwrap_or(""),
                s["paused"],
                match s["note"].as_str() {
                    Some(note) if !note.is_empty() => format!(" ({note})"),
                    _ => String::new(),
                }
            );
            say!(
                "started {}, skipped {}, missed {}",
                s["actions_started"],
                s["actions_skipped"],
                s["actions_missed"]
            );
            for t in s["next_times"].as_array().into_iter().flatten() {
                say!("  next   {}", t.as_str().unwrap_or(""));
            }
            for a in s["recent_actions"].as_array().into_iter().flatten() {
                say!(
                    "  recent {} {} {}",
                    a["scheduled_time"].as_str().unwrap_or(""),
                    a["action"].as_str().unwrap_or(""),
                    a["workflow_id"].as_str().unwrap_or("")
                );
            }
        }
        ScheduleCommand::Pause { id, note } => {
            api.call(
                "POST",
                &path(&id, "/pause"),
                Some(&serde_json::json!({"note": note})),
            )?;
            if table {
                say!("schedule {id} paused");
            }
        }
        ScheduleCommand::Unpause { id, note } => {
            api.call(
                "POST",
                &path(&id, "/unpause"),
                Some(&serde_json::json!({"note": note})),
            )?;
            if table {
                say!("schedule {id} unpaused");
            }
        }
        ScheduleCommand::Trigger { id, overlap } => {
            api.call(
                "POST",
                &path(&id, "/trigger"),
                Some(&serde_json::json!({"overlap_policy": overlap})),
            )?;
            if table {
                say!("schedule {id} triggered");
            }
        }
        ScheduleCommand::Backfill {
            id,
            start,
            end,
            overlap,
        } => {
            api.call(
                "POST",
                &path(&id, "/backfill"),
                Some(&serde_json::json!({"start": start, "end": end, "overlap_policy": overlap})),
            )?;
            if table {
                say!("schedule {id}: backfill from {start} to {end} accepted");
            }
        }
        ScheduleCommand::Delete { id } => {
            api.call("DELETE", &path(&id, ""), None)?;
            if table {
                say!("schedule {id} deleted");
            }
        }
    }
    Ok(())
}

fn workflow(args: WorkflowArgs) -> Result<()> {
    let table = args.client.output == Output::Table;
    let api = Api::new(args.client);
    match args.command {
        WorkflowCommand::Start {
            workflow_type,
            id,
            input,
            reuse_policy,
            execution_timeout_ms,
            cron,
            wait,
        } => {
            let id = id.unwrap_or_else(|| {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                format!("{workflow_type}-{ms}")
            });
            let mut body = serde_json::json!({
                "workflow_id": id,
                "workflow_type": workflow_type,
                "input": json_arg("--input", &input)?,
            });
            if let Some(policy) = reuse_policy {
                body["id_reuse_policy"] = Value::from(policy);
            }
            if let Some(ms) = execution_timeout_ms {
                body["execution_timeout_ms"] = Value::from(ms);
            }
            if let Some(cron) = cron {
                body["cron_schedule"] = Value::from(cron);
            }
            let (_, started) = api.call("POST", "/api/v1/workflows", Some(&body))?;
            if table {
                say!(
                    "started {} (run {})",
                    started["workflow_id"].as_str().unwrap_or(""),
                    started["run_id"].as_str().unwrap_or("")
                );
            } else if !wait {
                print_json(&started);
            }
            if wait {
                let path = format!("/api/v1/workflows/{}/result?wait_ms=2000", encode(&id));
                loop {
                    let (status, outcome) = api.call("GET", &path, None)?;
                    if status == 200 {
                        if table {
                            print_outcome(&outcome);
                        } else {
                            print_json(&outcome);
                        }
                        break;
                    }
                    if table {
                        let (_, d) =
                            api.call("GET", &format!("/api/v1/workflows/{}", encode(&id)), None)?;
                        say!(
                            "  … {} ({} events, {} pending activities)",
                            d["status"].as_str().unwrap_or("?"),
                            d["history_length"],
                            d["pending_activities"].as_array().map_or(0, Vec::len)
                        );
                    }
                }
            }
        }
        WorkflowCommand::Count { query } => {
            let (_, answer) = api.call(
                "GET",
                &format!("/api/v1/visibility/count?query={}", encode(&query)),
                None,
            )?;
            if table {
                say!("{}", answer["count"]);
            } else {
                print_json(&answer);
            }
        }
        WorkflowCommand::List {
            workflow_type,
            status,
            query: filter,
            limit,
        } => {
            // Pages through the cursor until `limit` workflows (or the last page): memory and
            // each response stay bounded however many workflows the node has.
            let base = match filter {
                Some(filter) => format!("/api/v1/visibility/workflows?query={}", encode(&filter)),
                None => {
                    let mut query: Vec<String> = Vec::new();
                    if let Some(t) = workflow_type {
                        query.push(format!("workflow_type={}", encode(&t)));
                    }
                    if let Some(s) = status {
                        query.push(format!("status={}", encode(&s)));
                    }
                    format!("/api/v1/workflows?{}", query.join("&"))
                }
            };
            let mut workflows = Vec::new();
            let mut token: Option<String> = None;
            while workflows.len() < limit {
                let size = (limit - workflows.len()).min(LIST_PAGE_SIZE_MAX);
                let mut path = format!("{base}&page_size={size}");
                if let Some(t) = &token {
                    path.push_str(&format!("&page_token={}", encode(t)));
                }
                let (_, page) = api.call("GET", &path, None)?;
                workflows.extend(page["workflows"].as_array().cloned().unwrap_or_default());
                token = page["next_page_token"].as_str().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            let list = Value::Array(workflows);
            if table {
                say!(
                    "{:<28} {:<16} {:<11} {:<36}",
                    "WORKFLOW ID",
                    "TYPE",
                    "STATUS",
                    "RUN ID"
                );
                for w in list.as_array().into_iter().flatten() {
                    say!(
                        "{:<28} {:<16} {:<11} {:<36}",
                        w["workflow_id"].as_str().unwrap_or(""),
                        w["workflow_type"].as_str().unwrap_or(""),
                        w["status"].as_str().unwrap_or(""),
                        w["run_id"].as_str().unwrap_or("")
                    );
                }
            } else {
                print_json(&list);
            }
        }
        WorkflowCommand::Describe { id } => {
            let (_, d) = api.call("GET", &format!("/api/v1/workflows/{}", encode(&id)), None)?;
            if table {
                say!(
                    "workflow {}  type {}  status {}",
                    d["workflow_id"].as_str().unwrap_or(""),
                    d["workflow_type"].as_str().unwrap_or(""),
                    d["status"].as_str().unwrap_or("")
                );
                say!(
                    "run {}  history events {}",
                    d["run_id"].as_str().unwrap_or(""),
                    d["history_length"]
                );
                for a in d["pending_activities"].as_array().into_iter().flatten() {
                    say!(
                        "  pending activity {} {} (attempt {})",
                        a["activity_id"].as_str().unwrap_or(""),
                        a["activity_type"].as_str().unwrap_or(""),
                        a["attempt"]
                    );
                }
                if !d["outcome"].is_null() {
                    print_outcome(&d["outcome"]);
                }
            } else {
                print_json(&d);
            }
        }
        WorkflowCommand::Show { id } => {
            let (_, history) = api.call(
                "GET",
                &format!("/api/v1/workflows/{}/history", encode(&id)),
                None,
            )?;
            if table {
                say!(
                    "{:>4}  {:<15} {:<34} DETAILS",
                    "ID",
                    "TIME (unix ms)",
                    "EVENT"
                );
                for e in history.as_array().into_iter().flatten() {
                    say!(
                        "{:>4}  {:<15} {:<34} {}",
                        e["event_id"].to_string(),
                        e["time_unix_ms"].to_string(),
                        e["event_type"].as_str().unwrap_or(""),
                        e["details"]
                    );
                }
            } else {
                print_json(&history);
            }
        }
        WorkflowCommand::Result { id, wait_ms } => {
            let (status, outcome) = api.call(
                "GET",
                &format!("/api/v1/workflows/{}/result?wait_ms={wait_ms}", encode(&id)),
                None,
            )?;
            if status != 200 {
                bail!("still running after {wait_ms} ms");
            }
            if table {
                print_outcome(&outcome);
            } else {
                print_json(&outcome);
            }
        }
        WorkflowCommand::Signal { id, name, input } => {
            api.call(
                "POST",
                &format!(
                    "/api/v1/workflows/{}/signals/{}",
                    encode(&id),
                    encode(&name)
                ),
                Some(&json_arg("--input", &input)?),
            )?;
            if table {
                say!("signal {name} sent to {id}");
            }
        }
        WorkflowCommand::Query { id, name, args } => {
            let (_, answer) = api.call(
                "POST",
                &format!(
                    "/api/v1/workflows/{}/queries/{}",
                    encode(&id),
                    encode(&name)
                ),
                Some(&json_arg("--args", &args)?),
            )?;
            print_json(&answer);
        }
        WorkflowCommand::Update {
            id,
            name,
            args,
            update_id,
            wait,
        } => {
            let args = json_arg("--args", &args)?;
            // One id for every try, so asking again joins the update rather than repeating it.
            let update_id = update_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            let path = format!(
                "/api/v1/workflows/{}/updates/{}?update_id={}&wait={wait}",
                encode(&id),
                encode(&name),
                encode(&update_id)
            );
            let answer = loop {
                let (status, answer) = api.call("POST", &path, Some(&args))?;
                if status != 202 {
                    break answer;
                }
            };
            if let Some(failure) = answer.get("failure") {
                bail!(
                    "update {update_id} failed: {}: {}",
                    failure["error_type"].as_str().unwrap_or("Error"),
                    failure["message"].as_str().unwrap_or("")
                );
            }
            match answer.get("result") {
                Some(result) => print_json(result),
                None if table => {
                    say!(
                        "update {update_id} {}",
                        answer["stage"].as_str().unwrap_or("")
                    );
                }
                None => print_json(&answer),
            }
        }
        WorkflowCommand::Cancel { id, reason } => {
            api.call(
                "POST",
                &format!("/api/v1/workflows/{}/cancel", encode(&id)),
                Some(&serde_json::json!({"reason": reason})),
            )?;
            if table {
                say!("cancellation requested for {id}");
            }
        }
        WorkflowCommand::Terminate { id, reason } => {
            api.call(
                "POST",
                &format!("/api/v1/workflows/{}/terminate", encode(&id)),
                Some(&serde_json::json!({"reason": reason})),
            )?;
            if table {
                say!("{id} terminated");
            }
        }
    }
    Ok(())
}

fn print_outcome(outcome: &Value) {
    match outcome["status"].as_str() {
        Some("completed") => say!("completed: {}", outcome["result"]),
        Some("failed") => say!(
            "failed: {}: {}",
            outcome["failure"]["error_type"].as_str().unwrap_or(""),
            outcome["failure"]["message"].as_str().unwrap_or("")
        ),
        Some("terminated") => say!("terminated: {}", outcome["reason"].as_str().unwrap_or("")),
        Some(other) => say!("{other}"),
        None => say!("{outcome}"),
    }
}

#[cfg(test)]
mod edge_tests {
    use super::{advertised_host, parse_duration_ms};

    /// The advertised name a node allows as Host (peers reach it by that name), and the
    /// retention durations the flag takes.
    #[test]
    fn advertised_hosts_and_durations_parse() {
        assert_eq!(
            advertised_host("http://cairn-2:7280").as_deref(),
            Some("cairn-2")
        );
        assert_eq!(
            advertised_host("https://[::1]:7280/").as_deref(),
            Some("::1")
        );
        assert_eq!(
            advertised_host("http://node.internal").as_deref(),
            Some("node.internal")
        );
        assert_eq!(advertised_host("cairn-2:7280"), None);
        assert_eq!(parse_duration_ms("36h"), Ok(36 * 3_600_000));
        assert_eq!(parse_duration_ms("7d"), Ok(7 * 86_400_000));
        assert!(parse_duration_ms("7").is_err());
        assert!(parse_duration_ms("d").is_err());
        assert!(parse_duration_ms("99999999999999999d").is_err());
    }
}
