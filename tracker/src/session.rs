//! Who the reader is and which visit this is: the anonymous id, the optional user id, the
//! session id (rotated after 30 minutes without activity) and the per-session batch sequence.
//!
//! Pure: time (`now_ms`) and randomness (16-byte arrays) are arguments. The shell stores the
//! state as JSON in `localStorage` and restores it on the next page.

use alloc::borrow::ToOwned;
use alloc::string::String;

use pulse_protocol::{BatchHeader, MAX_AUTH_LEN, MAX_USER_ID_LEN, PROTOCOL_VERSION};

use pulse_protocol::json_text::{hex128, push_str, push_u64};

use crate::json::Reader;

/// A session ends after this long without activity, in milliseconds (30 minutes).
pub const SESSION_IDLE_MS: u64 = 30 * 60 * 1000;

/// The reader's identity and current session, as kept across pages.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Session {
    /// Anonymous id: 32 lowercase hex digits, kept across visits.
    pub anonymous_id: String,
    /// The publisher's id for a logged-in reader (set by `identify`, cleared by `reset`).
    pub user_id: Option<String>,
    /// A token signed by the publisher (a JWT) vouching for the user id and entitlements (set
    /// by `identify` with `{token}` or by `auth`, cleared by `reset`); sent with every batch.
    pub auth: Option<String>,
    /// Current session id: 32 lowercase hex digits.
    pub session_id: String,
    /// Time of the last activity, milliseconds since the Unix epoch.
    pub last_activity_ms: u64,
    /// Sequence number the next batch of this session gets (from 0).
    pub next_seq: u64,
    /// The campaign the session came by (`source/medium/campaign` of its UTM parameters).
    pub campaign: Option<String>,
}

/// Lowercase hex of 16 bytes: 32 characters, a valid protocol token.
pub fn hex_id(bytes: [u8; 16]) -> String {
    hex128(u128::from_be_bytes(bytes))
}

impl Session {
    /// A new reader: fresh anonymous id and session, starting at `now_ms`.
    pub fn new(now_ms: u64, anonymous: [u8; 16], session: [u8; 16]) -> Self {
        Self {
            anonymous_id: hex_id(anonymous),
            user_id: None,
            auth: None,
            session_id: hex_id(session),
            last_activity_ms: now_ms,
            next_seq: 0,
            campaign: None,
        }
    }

    /// Restores a session stored with [`Session::to_json`]; `None` when the text is not a
    /// valid stored session (the shell then starts a new one).
    pub fn from_json(text: &str) -> Option<Self> {
        let (mut anonymous, mut current, mut user, mut auth) = (None, None, None, None);
        let (mut last, mut seq, mut campaign) = (0, 0, None);
        let mut r = Reader::new(text);
        r.object(|r, key| {
            match key {
                "anonymous_id" => anonymous = Some(r.string()?),
                "user_id" => user = Some(r.string()?),
                "auth" => auth = Some(r.string()?),
                "session_id" => current = Some(r.string()?),
                "last_activity_ms" => last = r.u64()?,
                "next_seq" => seq = r.u64()?,
                "campaign" => campaign = Some(r.string()?),
                _ => r.skip()?,
            }
            Some(())
        })?;
        if !r.done() {
            return None;
        }
        let mut session = Self::restore(anonymous?, current?, user, auth, last, seq)?;
        session.campaign = campaign;
        Some(session)
    }

    /// A session from its stored fields (the browser shell reads them with `JSON.parse`);
    /// `None` when one is not valid.
    pub fn restore(
        anonymous_id: String,
        session_id: String,
        user_id: Option<String>,
        auth: Option<String>,
        last_activity_ms: u64,
        next_seq: u64,
    ) -> Option<Self> {
        let token_ok = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let ok = token_ok(&anonymous_id)
            && token_ok(&session_id)
            && user_id.as_deref().is_none_or(valid_user_id)
            && auth.as_deref().is_none_or(valid_auth);
        ok.then_some(Self {
            anonymous_id,
            user_id,
            auth,
            session_id,
            last_activity_ms,
            next_seq,
            campaign: None,
        })
    }

    /// The state as JSON, for `localStorage`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (key, value) in [
            ("anonymous_id", Some(&self.anonymous_id)),
            ("user_id", self.user_id.as_ref()),
            ("auth", self.auth.as_ref()),
            ("session_id", Some(&self.session_id)),
            ("campaign", self.campaign.as_ref()),
        ] {
            if let Some(value) = value {
                push_str(&mut out, key);
                out.push(':');
                push_str(&mut out, value);
                out.push(',');
            }
        }
        out.push_str("\"last_activity_ms\":");
        push_u64(&mut out, self.last_activity_ms);
        out.push_str(",\"next_seq\":");
        push_u64(&mut out, self.next_seq);
        out.push('}');
        out
    }

    /// Records activity at `now_ms`. When the session was idle for more than
    /// [`SESSION_IDLE_MS`], a new session starts (new id from `fresh`, sequence back to 0)
    /// and this returns true.
    pub fn touch(&mut self, now_ms: u64, fresh: [u8; 16]) -> bool {
        let rotated = now_ms.saturating_sub(self.last_activity_ms) > SESSION_IDLE_MS;
        if rotated {
            self.start_session(now_ms, fresh);
        }
        self.last_activity_ms = self.last_activity_ms.max(now_ms);
        rotated
    }

    /// A page view reached by `campaign` (see `url::campaign_of`) at `now_ms`: a session that
    /// has sent anything under another campaign (or none) ends and a new one starts (new id
    /// from `fresh`); returns true then. Page views without a campaign change nothing.
    pub fn on_campaign(&mut self, now_ms: u64, campaign: Option<String>, fresh: [u8; 16]) -> bool {
        let Some(campaign) = campaign else {
            return false;
        };
        if self.campaign.as_deref() == Some(campaign.as_str()) {
            return false;
        }
        let rotate = self.next_seq > 0;
        if rotate {
            self.start_session(now_ms, fresh);
        }
        self.campaign = Some(campaign);
        rotate
    }

    /// Starts a new session at once (new id, sequence 0).
    pub fn start_session(&mut self, now_ms: u64, fresh: [u8; 16]) {
        self.campaign = None;
        self.session_id = hex_id(fresh);
        self.next_seq = 0;
        self.last_activity_ms = now_ms;
    }

    /// Sets the user id (log in). Returns false and changes nothing when the id is empty,
    /// longer than [`MAX_USER_ID_LEN`] bytes or holds control characters.
    pub fn identify(&mut self, user_id: &str) -> bool {
        if !valid_user_id(user_id) {
            return false;
        }
        self.user_id = Some(user_id.to_owned());
        true
    }

    /// Sets the token sent with every batch. Returns false and changes nothing when it is not
    /// a plausible JWT (1 to [`MAX_AUTH_LEN`] base64url characters and dots).
    pub fn set_auth(&mut self, token: &str) -> bool {
        if !valid_auth(token) {
            return false;
        }
        self.auth = Some(token.to_owned());
        true
    }

    /// Forgets the user id and token (log out) and starts a new session.
    pub fn reset(&mut self, now_ms: u64, fresh: [u8; 16]) {
        self.user_id = None;
        self.auth = None;
        self.start_session(now_ms, fresh);
    }

    /// The id of a page's first event (the page's next ones count up from it): the session id
    /// plus 48 random bits above the low 16, which the compact body writes in 8 bytes instead
    /// of 16 (ids stay unique: two pages of a session share an id with odds of 2^-48), or
    /// random when the session id is not a hex id.
    pub fn first_event_id(&self, random: [u8; 16]) -> u128 {
        match pulse_protocol::EventId::parse_hex(&self.session_id) {
            Some(s) => {
                let [a, b, c, d, e, f, ..] = random;
                let offset = u64::from_le_bytes([0, 0, a, b, c, d, e, f]);
                s.0.wrapping_add(u128::from(offset))
            }
            None => u128::from_be_bytes(random),
        }
    }

    /// The header of the next batch of this session: takes the next sequence number.
    /// `sent_at` is `now_ms`; the queue re-stamps it on every (re)send.
    pub fn next_header(&mut self, site_key: &str, now_ms: u64) -> BatchHeader {
        let header = self.peek_header(site_key, now_ms);
        self.next_seq += 1;
        header
    }

    /// The header the next batch will have, without taking its sequence number: for the
    /// waiting events parked in storage, which this page sends under the same number.
    pub fn peek_header(&self, site_key: &str, now_ms: u64) -> BatchHeader {
        BatchHeader {
            v: PROTOCOL_VERSION,
            site_key: site_key.to_owned(),
            anonymous_id: self.anonymous_id.clone(),
            user_id: self.user_id.clone(),
            auth: self.auth.clone(),
            session_id: self.session_id.clone(),
            seq: self.next_seq,
            sent_at: now_ms,
            resent: false,
        }
    }
}

fn valid_auth(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_AUTH_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

fn valid_user_id(user_id: &str) -> bool {
    !user_id.is_empty()
        && user_id.len() <= MAX_USER_ID_LEN
        && !user_id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_pages_first_event_id_is_the_session_id_plus_48_random_bits() {
        let s = Session::new(0, [1; 16], [2; 16]);
        let sid = pulse_protocol::EventId::parse_hex(&s.session_id).unwrap().0;
        let id = s.first_event_id([0xff; 16]);
        assert_eq!(id.wrapping_sub(sid), 0xffff_ffff_ffff_0000);
        assert_ne!(s.first_event_id([7; 16]), id);
        let mut odd = s.clone();
        odd.session_id = "not-hex".into();
        assert_eq!(odd.first_event_id([9; 16]), u128::from_be_bytes([9; 16]));
    }
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn bytes(n: u8) -> [u8; 16] {
        [n; 16]
    }

    #[test]
    fn ids_are_32_hex() {
        let s = Session::new(T0, bytes(0xab), bytes(1));
        assert_eq!(s.anonymous_id, "ab".repeat(16));
        assert_eq!(s.session_id, "01".repeat(16));
        assert_eq!(hex_id([0; 16]), "0".repeat(32));
    }

    #[test]
    fn seq_increments_per_batch() {
        let mut s = Session::new(T0, bytes(1), bytes(2));
        let seqs: Vec<u64> = (0..3).map(|i| s.next_header("demo", T0 + i).seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        let h = s.next_header("demo", T0 + 9);
        assert_eq!((h.v, h.site_key.as_str(), h.sent_at), (1, "demo", T0 + 9));
        assert_eq!(h.session_id, s.session_id);
    }

    #[test]
    fn session_rotates_after_30_idle_minutes() {
        let mut s = Session::new(T0, bytes(1), bytes(2));
        s.next_header("k", T0);
        s.next_header("k", T0);
        // Activity within the window keeps the session, even over a long total time.
        for minute in 1..=90 {
            assert!(!s.touch(T0 + minute * 60_000, bytes(3)));
        }
        let first = s.session_id.clone();
        let last = T0 + 90 * 60_000;
        // Exactly 30 minutes idle: same session.
        assert!(!s.touch(last + SESSION_IDLE_MS, bytes(3)));
        // 30 minutes and 1 ms idle: new session, seq back to 0, anonymous id kept.
        let later = last + 2 * SESSION_IDLE_MS + 1;
        assert!(s.touch(later, bytes(3)));
        assert_ne!(s.session_id, first);
        assert_eq!(s.next_seq, 0);
        assert_eq!(s.anonymous_id, hex_id(bytes(1)));
        assert_eq!(s.next_header("k", later).seq, 0);
    }

    #[test]
    fn a_new_campaign_starts_a_new_session() {
        let mut s = Session::new(T0, bytes(1), bytes(2));
        // The first campaign of a session that has sent nothing is its own.
        assert!(!s.on_campaign(T0, Some("news/email/am".into()), bytes(3)));
        s.next_header("k", T0);
        assert!(!s.on_campaign(T0, None, bytes(3)));
        assert!(!s.on_campaign(T0, Some("news/email/am".into()), bytes(3)));
        assert!(s.on_campaign(T0 + 1, Some("social//".into()), bytes(4)));
        assert_eq!(
            (s.session_id.as_str(), s.next_seq),
            (hex_id(bytes(4)).as_str(), 0)
        );
        assert_eq!(s.campaign.as_deref(), Some("social//"));
        // Kept across pages.
        let back = Session::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        // A session ended by idleness forgets its campaign.
        let mut s = back;
        s.touch(T0 + 2 * SESSION_IDLE_MS, bytes(5));
        assert_eq!(s.campaign, None);
    }

    #[test]
    fn identify_and_reset() {
        let mut s = Session::new(T0, bytes(1), bytes(2));
        assert!(s.identify("user-42"));
        assert_eq!(s.next_header("k", T0).user_id.as_deref(), Some("user-42"));
        assert!(!s.identify(""));
        assert!(!s.identify("a\nb"));
        assert!(!s.identify(&"u".repeat(MAX_USER_ID_LEN + 1)));
        assert!(s.identify(&"u".repeat(MAX_USER_ID_LEN)));
        assert!(s.set_auth("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln"));
        assert_eq!(
            s.next_header("k", T0).auth.as_deref(),
            Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln")
        );
        assert!(!s.set_auth("not a token"));
        assert!(!s.set_auth(""));
        assert!(!s.set_auth(&"a".repeat(MAX_AUTH_LEN + 1)));
        s.reset(T0 + 5, bytes(9));
        assert_eq!(s.user_id, None);
        assert_eq!(s.session_id, hex_id(bytes(9)));
        assert_eq!(s.next_seq, 0);
    }

    #[test]
    fn json_round_trip_and_garbage() {
        let mut s = Session::new(T0, bytes(1), bytes(2));
        s.identify("u1");
        s.next_header("k", T0);
        let back = Session::from_json(&s.to_json());
        assert_eq!(back, Some(s));
        assert_eq!(Session::from_json("not json"), None);
        assert_eq!(
            Session::from_json(
                r#"{"anonymous_id":"x","session_id":"y","last_activity_ms":0,"next_seq":0}"#
            ),
            None
        );
    }
}
