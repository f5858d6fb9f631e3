//! What the reader allowed: whether the tracker may record events, send them, and keep an
//! identifier in storage. Pure: the shell reads the site's mode, the browser's privacy signals
//! and the remembered opt-out, and asks [`Consent`] before it queues, sends or stores.

/// The tracker's consent state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    /// Record, send and store (the default).
    Granted,
    /// Record and send, but keep nothing in storage: a new reader on every page load.
    MemoryOnly,
    /// Record in memory only; nothing is sent or stored until the reader grants consent.
    Pending,
    /// Record, send and store nothing (refused, opted out, or a privacy signal).
    Refused,
}

impl Consent {
    /// The state at `init`: the site's `consent` option (`granted`, `memory` or `pending`;
    /// anything else is `granted`), unless the reader opted out before or the browser sends
    /// Global Privacy Control or Do Not Track (`signal`), which refuse.
    pub fn at_init(mode: Option<&str>, signal: bool, opted_out: bool) -> Self {
        if opted_out || signal {
            return Self::Refused;
        }
        match mode {
            Some("pending") => Self::Pending,
            Some("memory") => Self::MemoryOnly,
            _ => Self::Granted,
        }
    }

    /// The state after `pulse('consent', {granted, storage})`: granted with or without
    /// storage, or refused.
    pub fn answered(granted: bool, storage: bool) -> Self {
        match (granted, storage) {
            (false, _) => Self::Refused,
            (true, true) => Self::Granted,
            (true, false) => Self::MemoryOnly,
        }
    }

    /// Events may be recorded (queued).
    pub fn may_record(self) -> bool {
        self != Self::Refused
    }

    /// Events may be sent.
    pub fn may_send(self) -> bool {
        matches!(self, Self::Granted | Self::MemoryOnly)
    }

    /// An identifier (the session) and unsent events may be kept in storage.
    pub fn may_store(self) -> bool {
        self == Self::Granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_a_remembered_opt_out_refuse() {
        assert_eq!(Consent::at_init(None, false, false), Consent::Granted);
        assert_eq!(
            Consent::at_init(Some("granted"), false, false),
            Consent::Granted
        );
        assert_eq!(
            Consent::at_init(Some("pending"), false, false),
            Consent::Pending
        );
        assert_eq!(
            Consent::at_init(Some("memory"), false, false),
            Consent::MemoryOnly
        );
        assert_eq!(
            Consent::at_init(Some("memory"), true, false),
            Consent::Refused
        );
        assert_eq!(Consent::at_init(None, false, true), Consent::Refused);
    }

    #[test]
    fn what_each_state_allows() {
        let allows = |c: Consent| (c.may_record(), c.may_send(), c.may_store());
        assert_eq!(allows(Consent::Granted), (true, true, true));
        assert_eq!(allows(Consent::MemoryOnly), (true, true, false));
        assert_eq!(allows(Consent::Pending), (true, false, false));
        assert_eq!(allows(Consent::Refused), (false, false, false));
        assert_eq!(Consent::answered(true, true), Consent::Granted);
        assert_eq!(Consent::answered(true, false), Consent::MemoryOnly);
        assert_eq!(Consent::answered(false, true), Consent::Refused);
    }
}
