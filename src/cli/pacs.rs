//! `mvfa-studio pacs echo|find|get|send|nodes`: the PACS client of [`crate::pacs`] from the
//! command line. The node is a saved one (`--node NAME`, from the settings file the app uses)
//! or given inline (`--url`, or `--host/--port/--aet`). Passwords and tokens are read from
//! environment variables named on the command line, never from the command line itself, and
//! never printed.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::pacs::node::{DimseEndpoint, WebEndpoint};
use crate::pacs::tls::TlsSettings;
use crate::pacs::{
    Endpoint, GetTarget, Level, Node, PacsClient, PacsSettings, Progress, Query, Secret, WebAuth,
    connect, retrieve,
};

#[derive(Args, Debug)]
pub struct PacsArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(subcommand)]
    pub action: Action,
}

/// Which node to talk to.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Settings file with the saved nodes (default: pacs_nodes.json in the app's folder).
    #[arg(long, global = true, value_name = "FILE")]
    pub nodes: Option<PathBuf>,
    /// A saved node, by name.
    #[arg(long, global = true, value_name = "NAME", conflicts_with_all = ["url", "host"])]
    pub node: Option<String>,
    /// DICOMweb base URL (e.g. http://pacs:8042/dicom-web).
    #[arg(long, global = true, value_name = "URL", conflicts_with = "host")]
    pub url: Option<String>,
    /// DICOMweb user for basic authentication (password from --password-env).
    #[arg(long, global = true, value_name = "USER", requires = "password_env")]
    pub user: Option<String>,
    /// Environment variable holding the basic-authentication password.
    #[arg(long, global = true, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Environment variable holding a bearer token.
    #[arg(long, global = true, value_name = "VAR", conflicts_with = "user")]
    pub token_env: Option<String>,
    /// DIMSE host.
    #[arg(long, global = true, value_name = "HOST", requires = "aet")]
    pub host: Option<String>,
    /// DIMSE port.
    #[arg(long, global = true, default_value_t = 104)]
    pub port: u16,
    /// The server's AE title (DIMSE).
    #[arg(long, global = true, value_name = "AET")]
    pub aet: Option<String>,
    /// Our AE title (DIMSE).
    #[arg(long, global = true, value_name = "AET", default_value = "MVFA_STUDIO")]
    pub calling_aet: String,
    /// Network timeout in seconds (overrides the saved node's).
    #[arg(long, global = true, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// DIMSE over DICOM TLS (implied by the certificate options; a DICOMweb node uses TLS
    /// when its URL is https://).
    #[arg(long, global = true)]
    pub tls: bool,
    /// PEM file of the CA that signs the server's certificate (default: the public web roots).
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of our client certificate, for servers that ask for one.
    #[arg(long, global = true, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[arg(long, global = true, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl NodeArgs {
    /// The TLS settings the options ask for, if any.
    fn tls_settings(&self) -> Option<TlsSettings> {
        let settings = TlsSettings {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        };
        (self.tls || settings != TlsSettings::default()).then_some(settings)
    }
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Check that the node answers (C-ECHO, or a QIDO-RS search).
    Echo,
    /// Search for studies, series or instances.
    Find(FindArgs),
    /// Retrieve a study or series into a folder (resumes: files already there are skipped).
    Get(GetArgs),
    /// Store DICOM files on the node: files, or folders (e.g. a `score --dicom` output) whose
    /// .dcm files are sent (for a `score --dicom` output: the Secondary Captures and the SRs
    /// of the score table).
    Send(SendArgs),
    /// Manage the saved nodes.
    #[command(subcommand)]
    Nodes(NodesAction),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelArg {
    Study,
    Series,
    Instance,
}

#[derive(Args, Debug)]
pub struct FindArgs {
    #[arg(long, value_enum, default_value = "study")]
    pub level: LevelArg,
    #[arg(long)]
    pub patient_id: Option<String>,
    /// Patient name; DICOM wildcards * and ? allowed (e.g. "DOE^*").
    #[arg(long)]
    pub patient_name: Option<String>,
    /// First study date, YYYYMMDD.
    #[arg(long, value_name = "YYYYMMDD")]
    pub from: Option<String>,
    /// Last study date, YYYYMMDD.
    #[arg(long, value_name = "YYYYMMDD")]
    pub to: Option<String>,
    #[arg(long)]
    pub modality: Option<String>,
    #[arg(long)]
    pub accession: Option<String>,
    /// Study Instance UID (series and instance searches).
    #[arg(long, value_name = "UID")]
    pub study: Option<String>,
    /// Series Instance UID (instance searches).
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[arg(long, value_name = "UID")]
    pub study: String,
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
    /// Folder to retrieve into: <DIR>/<study>/<series>/<instance>.dcm.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum NodesAction {
    /// List the saved nodes (credentials are not shown).
    List,
    /// Save the node given by --url or --host/--port/--aet under NAME (replacing one of that
    /// name); credentials are read from the variables named by --password-env/--token-env.
    Add { name: String },
    /// Remove a saved node.
    Remove { name: String },
}

pub fn run(args: PacsArgs) -> anyhow::Result<ExitCode> {
    let settings_path = match &args.node.nodes {
        Some(p) => p.clone(),
        None => PacsSettings::default_path()
            .context("no folder for the settings on this system; pass --nodes FILE")?,
    };
    let open = || -> anyhow::Result<(Node, Box<dyn PacsClient>)> {
        let node = resolve_node(&args.node, &settings_path)?;
        let client = connect(&node)?;
        Ok((node, client))
    };
    match args.action {
        Action::Nodes(action) => return nodes(&action, &args.node, &settings_path),
        Action::Echo => {
            let (node, client) = open()?;
            client.echo()?;
            println!("{} answers", node.name);
        }
        Action::Find(f) => {
            let (_, client) = open()?;
            find(client.as_ref(), f)?;
        }
        Action::Get(g) => {
            let (_, client) = open()?;
            get(client.as_ref(), g)?;
        }
        Action::Send(s) => {
            let files = dicom_files(&s.paths)?;
            let (_, client) = open()?;
            return Ok(send(client.as_ref(), &files));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `find`: one tab-separated line per match, the count on stderr.
fn find(client: &dyn PacsClient, f: FindArgs) -> anyhow::Result<()> {
    let query = Query {
        level: match f.level {
            LevelArg::Study => Level::Study,
            LevelArg::Series => Level::Series,
            LevelArg::Instance => Level::Instance,
        },
        patient_id: f.patient_id,
        patient_name: f.patient_name,
        date_from: f.from,
        date_to: f.to,
        modality: f.modality,
        accession: f.accession,
        study_uid: f.study,
        series_uid: f.series,
    };
    let matches = client.find(&query)?;
    for m in &matches {
        let uid = match query.level {
            Level::Study => &m.study_uid,
            Level::Series => &m.series_uid,
            Level::Instance => &m.sop_instance_uid,
        };
        let count = m
            .related_instances
            .map(|n| format!("\t{n} instance(s)"))
            .unwrap_or_default();
        println!(
            "{uid}\t{}\t{}\t{}\t{}\t{}\t{}{count}",
            m.patient_id, m.patient_name, m.study_date, m.accession, m.modality, m.description
        );
    }
    eprintln!("{} match(es)", matches.len());
    Ok(())
}

/// `get`: retrieves the study or series into `--out` with a progress bar.
fn get(client: &dyn PacsClient, g: GetArgs) -> anyhow::Result<()> {
    let target = GetTarget {
        study_uid: g.study,
        series_uid: g.series,
    };
    let bar = super::common::progress_bar(0, "instances");
    // Ctrl+C ends the process; the files written so far are complete.
    let never_cancelled = AtomicBool::new(false);
    let report = retrieve::get(
        client,
        &target,
        &g.out,
        &mut |p: Progress| {
            bar.set_length(p.total as u64);
            bar.set_position((p.skipped + p.written) as u64);
        },
        &never_cancelled,
    );
    bar.finish_and_clear();
    let report = report?;
    println!(
        "{} instance(s) in {}: {} retrieved, {} already present",
        report.total,
        g.out.display(),
        report.written,
        report.skipped
    );
    Ok(())
}

/// `send`: stores each file, going on after a failure; fails when any file failed.
fn send(client: &dyn PacsClient, files: &[PathBuf]) -> ExitCode {
    let mut failed = 0usize;
    for file in files {
        match client.store(file) {
            Ok(uid) => println!("{}: stored as {uid}", file.display()),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", file.display());
            }
        }
    }
    println!("{} of {} file(s) stored", files.len() - failed, files.len());
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The named files, and the `.dcm` files directly inside named folders, sorted.
fn dicom_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list the folder", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "dcm"))
                .collect();
            if found.is_empty() {
                bail!("{}: no .dcm files in this folder", path.display());
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn env_secret(var: &str) -> anyhow::Result<Secret> {
    std::env::var(var)
        .map(Secret::new)
        .with_context(|| format!("environment variable {var} is not set"))
}

/// The node given inline, if any.
fn inline_node(args: &NodeArgs) -> anyhow::Result<Option<Node>> {
    let endpoint = if let Some(url) = &args.url {
        let auth = match (&args.user, &args.password_env, &args.token_env) {
            (Some(user), Some(var), _) => WebAuth::Basic {
                username: user.clone(),
                password: env_secret(var)?,
            },
            (_, _, Some(var)) => WebAuth::Bearer {
                token: env_secret(var)?,
            },
            _ => WebAuth::None,
        };
        Endpoint::Dicomweb(WebEndpoint {
            base_url: url.clone(),
            auth,
            tls: args.tls_settings(),
        })
    } else if let Some(host) = &args.host {
        Endpoint::Dimse(DimseEndpoint {
            host: host.clone(),
            port: args.port,
            called_ae: args.aet.clone().unwrap_or_default(),
            calling_ae: args.calling_aet.clone(),
            tls: args.tls_settings(),
        })
    } else {
        return Ok(None);
    };
    let name = match &endpoint {
        Endpoint::Dicomweb(w) => w.base_url.clone(),
        Endpoint::Dimse(d) => format!("{}@{}:{}", d.called_ae, d.host, d.port),
    };
    Ok(Some(Node {
        name,
        endpoint,
        timeout_secs: args.timeout.unwrap_or(30),
    }))
}

fn resolve_node(args: &NodeArgs, settings_path: &Path) -> anyhow::Result<Node> {
    if let Some(node) = inline_node(args)? {
        return Ok(node);
    }
    let settings = PacsSettings::load(settings_path)?;
    let node = match (&args.node, settings.nodes.as_slice()) {
        (Some(name), _) => settings
            .node(name)
            .with_context(|| format!("no saved node called {name:?}"))?
            .clone(),
        (None, [only]) => only.clone(),
        (None, []) => bail!("no node: pass --node, --url or --host (no saved nodes)"),
        (None, _) => bail!("several saved nodes: pick one with --node NAME"),
    };
    Ok(Node {
        timeout_secs: args.timeout.unwrap_or(node.timeout_secs),
        ..node
    })
}

fn nodes(action: &NodesAction, args: &NodeArgs, path: &Path) -> anyhow::Result<ExitCode> {
    let mut settings = PacsSettings::load(path)?;
    match action {
        NodesAction::List => {
            for n in &settings.nodes {
                let (protocol, address) = match &n.endpoint {
                    Endpoint::Dicomweb(w) => ("dicomweb", w.base_url.clone()),
                    Endpoint::Dimse(d) => (
                        if d.tls.is_some() {
                            "dimse+tls"
                        } else {
                            "dimse"
                        },
                        format!("{}@{}:{} as {}", d.called_ae, d.host, d.port, d.calling_ae),
                    ),
                };
                println!(
                    "{}\t{protocol}\t{address}\ttimeout {} s",
                    n.name, n.timeout_secs
                );
            }
        }
        NodesAction::Add { name } => {
            let node =
                inline_node(args)?.context("give the node with --url or --host/--port/--aet")?;
            settings.upsert(Node {
                name: name.clone(),
                ..node
            });
            settings.save(path)?;
            println!("saved node {name:?} in {}", path.display());
        }
        NodesAction::Remove { name } => {
            let before = settings.nodes.len();
            settings.nodes.retain(|n| &n.name != name);
            if settings.nodes.len() == before {
                bail!("no saved node called {name:?}");
            }
            settings.save(path)?;
            println!("removed node {name:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
