use std::fmt;
use std::str::FromStr;

/// A POSIX signal that `process/signal` may deliver to a process group.
///
/// On the wire the Codex exec-server knows only `"interrupt"` (SIGINT). execd also accepts any
/// name below, with or without the `SIG` prefix, in either case (ext), e.g. `"SIGTERM"`,
/// `"term"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// SIGHUP (1).
    Hup,
    /// SIGINT (2); the reference's `"interrupt"`.
    Int,
    /// SIGQUIT (3).
    Quit,
    /// SIGKILL (9).
    Kill,
    /// SIGUSR1 (10).
    Usr1,
    /// SIGUSR2 (12).
    Usr2,
    /// SIGALRM (14).
    Alrm,
    /// SIGTERM (15).
    Term,
    /// SIGCONT (18).
    Cont,
    /// SIGSTOP (19).
    Stop,
    /// SIGTSTP (20).
    Tstp,
    /// SIGWINCH (28).
    Winch,
}

const TABLE: &[(Signal, &str, i32)] = &[
    (Signal::Hup, "HUP", 1),
    (Signal::Int, "INT", 2),
    (Signal::Quit, "QUIT", 3),
    (Signal::Kill, "KILL", 9),
    (Signal::Usr1, "USR1", 10),
    (Signal::Usr2, "USR2", 12),
    (Signal::Alrm, "ALRM", 14),
    (Signal::Term, "TERM", 15),
    (Signal::Cont, "CONT", 18),
    (Signal::Stop, "STOP", 19),
    (Signal::Tstp, "TSTP", 20),
    (Signal::Winch, "WINCH", 28),
];

impl Signal {
    /// The Linux signal number.
    pub fn number(self) -> i32 {
        TABLE.iter().find(|(s, _, _)| *s == self).map_or(0, |e| e.2)
    }

    /// The conventional name, e.g. `"SIGTERM"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Alrm => "SIGALRM",
            Signal::Term => "SIGTERM",
            Signal::Cont => "SIGCONT",
            Signal::Stop => "SIGSTOP",
            Signal::Tstp => "SIGTSTP",
            Signal::Winch => "SIGWINCH",
        }
    }

    /// The signal with Linux number `number`, if it is one of these.
    pub fn from_number(number: i32) -> Option<Signal> {
        TABLE.iter().find(|e| e.2 == number).map(|e| e.0)
    }
}

/// The conventional name of Linux signal `number` (1–31), e.g. `"SIGSEGV"` for 11.
pub fn signal_name(number: i32) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    let index = usize::try_from(number).ok()?.checked_sub(1)?;
    NAMES.get(index).copied()
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The signal name was not recognised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal {0:?}")]
pub struct UnknownSignal(pub String);

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "interrupt" {
            return Ok(Signal::Int);
        }
        let upper = s.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        TABLE
            .iter()
            .find(|e| e.1 == bare)
            .map(|e| e.0)
            .ok_or_else(|| UnknownSignal(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_and_posix_names() {
        assert_eq!("interrupt".parse(), Ok(Signal::Int));
        assert_eq!("SIGTERM".parse(), Ok(Signal::Term));
        assert_eq!("term".parse(), Ok(Signal::Term));
        assert_eq!("SigKill".parse(), Ok(Signal::Kill));
        assert!("SIGFOO".parse::<Signal>().is_err());
        assert!("".parse::<Signal>().is_err());
    }

    #[test]
    fn names_every_linux_signal() {
        assert_eq!(signal_name(11), Some("SIGSEGV"));
        assert_eq!(signal_name(31), Some("SIGSYS"));
        assert_eq!(signal_name(0), None);
        assert_eq!(signal_name(32), None);
        for (signal, _, number) in TABLE {
            assert_eq!(signal_name(*number), Some(signal.name()));
        }
    }

    #[test]
    fn numbers_round_trip() {
        for (signal, _, number) in TABLE {
            assert_eq!(signal.number(), *number);
            assert_eq!(Signal::from_number(*number), Some(*signal));
        }
    }
}
