//! The examples shown under `execd help COMMAND` (clap `after_help`).

pub(crate) const EXECD: &str = "\
Examples:
  execd run uname -a                          run through a local stdio server
  execd serve --listen ws://127.0.0.1:7000    serve on a loopback WebSocket
  execd run --url ws://127.0.0.1:7000 make    run through that server
  execd help run                              flags and examples of one command";

pub(crate) const SERVE: &str = "\
Examples:
  execd serve                                  loopback, a free port (printed first on stdout)
  execd serve --listen ws://127.0.0.1:7000 --session-ttl 300
  execd serve --listen stdio                   one connection on stdin/stdout
  execd serve --listen unix:$XDG_RUNTIME_DIR/execd.sock    a 0600 Unix socket
  execd serve --listen ws://0.0.0.0:7000 --ws-auth capability-token \\
      --ws-token-file token --tls-cert cert.pem --tls-key key.pem

Logs go to stderr; EXECD_LOG=debug sets the level (tracing filter syntax).";

pub(crate) const RUN: &str = "\
Examples:
  execd run uname -a                           local stdio server; `--` is optional
  execd run --url ws://127.0.0.1:7000 -- make test
  seq 1 5 | execd run --url ws://127.0.0.1:7000 cat
  execd run -t --cwd /srv/app --env RUST_LOG=debug cargo run    PTY, raw mode
  execd run --url ws://127.0.0.1:7000 --detach long-job         prints SESSION PROCESS
  execd run --ssh alice@build1 -- make -j8     over ssh; survives ssh dying (resumes)
  execd run --ssh build1 --ssh-opt=-p2222 --ssh-execd '~/bin/execd' uname -a

Exit code: the command's; 128+n when signal n killed it; 127 not found; 126 cannot run;
255 when execd itself failed. Ctrl-C, SIGTERM and SIGHUP are forwarded to the command's
process group (a third Ctrl-C kills it).";

pub(crate) const BRIDGE: &str = "\
Examples:
  ssh host execd bridge                        what `execd run --ssh host` runs

The daemon: `execd serve --listen unix:DIR/serve.sock`, started by the first bridge (under
DIR/serve.lock, so two bridges start one daemon), in a session of its own, logging to
DIR/serve.log, its pid in DIR/serve.pid. DIR is $XDG_RUNTIME_DIR/execd, else ~/.execd (0700).";

pub(crate) const PS: &str = "\
Examples:
  execd ps --url ws://127.0.0.1:7000 0b7f3c52-9c1e-4e0a-8f61-2d5a7c9e4b13";

pub(crate) const ATTACH: &str = "\
Examples:
  execd attach --url ws://127.0.0.1:7000 $(execd run --url ws://127.0.0.1:7000 --detach make)

Output starts at the oldest chunk the server still retains (1 MiB per process) and each chunk
is printed once; stdin EOF closes the process's stdin; exits with the process's exit code.";

pub(crate) const BENCH: &str = "\
Examples:
  execd bench                                  against a local execd serve
  execd bench --url ws://127.0.0.1:7000 --iterations 200";

pub(crate) const COMPLETIONS: &str = "\
Examples:
  execd completions bash > /etc/bash_completion.d/execd
  execd completions zsh > \"${fpath[1]}/_execd\"
  execd completions fish > ~/.config/fish/completions/execd.fish";

pub(crate) const MAN: &str = "\
Examples:
  execd man > execd.1 && man ./execd.1";
