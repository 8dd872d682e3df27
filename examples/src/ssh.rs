//! `execd run --ssh [USER@]HOST`: the flags that reach a host through ssh, and the start
//! parameters that differ there (the remote home directory and environment, not this one's).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context as _;
use execd_core::protocol::{method, EnvPolicy, Inherit, StartParams};
use execd_core::PathUri;
use execd_runtime::{Client, SshOptions};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SshArgs {
    /// Run on HOST through `ssh [USER@]HOST execd bridge`, which relays to (and first starts)
    /// this user's `execd serve` daemon there; a dropped ssh connection is reopened and the
    /// session resumed. Authentication must not prompt (ssh runs with BatchMode=yes).
    #[arg(long, value_name = "[USER@]HOST", conflicts_with = "url")]
    pub(crate) ssh: Option<String>,
    /// An option for ssh, one argv word each (repeatable): `--ssh-opt=-p2222`,
    /// `--ssh-opt=-oStrictHostKeyChecking=no`, or `--ssh-opt -i --ssh-opt key`.
    #[arg(
        long = "ssh-opt",
        value_name = "OPT",
        allow_hyphen_values = true,
        requires = "ssh"
    )]
    pub(crate) ssh_opt: Vec<String>,
    /// The remote execd, as a command for the remote shell (` bridge` is appended).
    #[arg(long, value_name = "PATH", default_value = "execd", requires = "ssh")]
    pub(crate) ssh_execd: String,
}

impl SshArgs {
    /// [`SshOptions`] for `execd run`: these flags, and `client` for the rest.
    pub(crate) fn options(&self, mut client: execd_runtime::ClientOptions) -> SshOptions {
        let mut options = SshOptions::default();
        options.ssh_args = self.ssh_opt.iter().map(OsString::from).collect();
        options.remote_execd = self.ssh_execd.clone();
        client.connect_timeout = options.client.connect_timeout;
        options.client = client;
        options
    }
}

/// Adjusts `params` for a remote host: without `--cwd`, the remote home directory (as `ssh
/// HOST CMD` starts there); the environment is the daemon's (the remote login environment,
/// every variable) with `--env` on top, or only `--env` with `--clear-env`.
pub(crate) async fn remote_params<R>(
    client: &Client<R>,
    params: &mut StartParams,
    cwd: Option<&PathBuf>,
    env: BTreeMap<String, String>,
    clear_env: bool,
) -> anyhow::Result<()> {
    if cwd.is_none() {
        let info = client
            .call(method::ENVIRONMENT_INFO, serde_json::json!({}))
            .await
            .context("environment/info failed")?;
        let dir = info
            .get("userHomeDir")
            .filter(|d| !d.is_null())
            .or_else(|| info.get("cwd"))
            .cloned()
            .context("the server reported no home directory")?;
        params.cwd = serde_json::from_value::<PathUri>(dir)
            .context("the server reported an invalid home directory")?;
    }
    params.env = env;
    params.env_policy = Some(EnvPolicy {
        inherit: if clear_env {
            Inherit::None
        } else {
            Inherit::All
        },
        ignore_default_excludes: true,
        exclude: Vec::new(),
        set: BTreeMap::new(),
        include_only: Vec::new(),
    });
    Ok(())
}
