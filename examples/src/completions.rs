//! `execd completions SHELL` and `execd man`: shell completion scripts (clap_complete) and the
//! man page (clap_mangen, roff), both printed to stdout and generated from the same clap
//! definitions as `--help`.

use std::io;

use clap::CommandFactory as _;

use crate::Cli;

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to generate the completion script for.
    #[arg(value_enum, value_name = "SHELL")]
    shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell`.
pub(crate) fn completions(args: &CompletionsArgs) {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "execd", &mut io::stdout().lock());
}

/// Prints the man page `execd(1)`, then one section per subcommand, as roff.
///
/// # Errors
/// Writing to stdout failed.
pub(crate) fn man() -> io::Result<()> {
    let command = Cli::command();
    let mut out = io::stdout().lock();
    clap_mangen::Man::new(command.clone()).render(&mut out)?;
    for sub in command.get_subcommands() {
        if sub.is_hide_set() {
            continue;
        }
        // clap names take `&'static str` (without its `string` feature); this runs once per
        // subcommand in a process that prints the page and exits.
        let name: &'static str = Box::leak(format!("execd-{}", sub.get_name()).into_boxed_str());
        let sub = sub.clone().name(name);
        let man = clap_mangen::Man::new(sub);
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        man.render_extra_section(&mut out)?;
    }
    Ok(())
}
