//! Parsing of the `Authorization` header the way pveproxy does it.
//!
//! Sources: pve-http-server `PVE/APIServer/Formatter.pm` `extract_auth_value` (key preceded by
//! the start or whitespace, then `=` or a space, value up to the next `;`, URI-unescaped, and an
//! empty or `"0"` value counts as absent because Perl tests it for truth), `PVE/APIServer/AnyEvent.pm`
//! `authenticate_and_handle_request` (a `PVEAuthCookie` ticket in the header is preferred over a
//! token), and pve-access-control `AccessControl::verify_token` (`^(.*)=(.*)$`: the split is at
//! the LAST `=`).

/// What the `Authorization` header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderAuth {
    /// Neither a ticket nor a token: pveproxy answers `401 No ticket`.
    Nothing,
    /// A `PVEAuthCookie=` ticket. The simulator issues no tickets, so it can never verify.
    Ticket,
    /// The URI-decoded `PVEAPIToken` value, `USER@REALM!TOKENID=SECRET` if well formed.
    /// `None` when the decoded bytes are not UTF-8.
    Token(Option<String>),
}

/// `extract_auth_value($header, $key)`: the raw (still encoded) value, `None` if absent or falsy.
pub fn extract_auth_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(pos) = header[from..].find(key) {
        let start = from + pos;
        let after = start + key.len();
        let preceded_ok = header[..start]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        let followed_ok = matches!(header.as_bytes().get(after), Some(b'=') | Some(b' '));
        if preceded_ok && followed_ok {
            let rest = &header[after + 1..];
            let value = rest.split(';').next().unwrap_or("");
            return (!value.is_empty() && value != "0").then_some(value);
        }
        from = start + 1;
    }
    None
}

/// Classify an `Authorization` header value.
pub fn parse_authorization(header: &str) -> HeaderAuth {
    if extract_auth_value(header, "PVEAuthCookie").is_some() {
        return HeaderAuth::Ticket;
    }
    match extract_auth_value(header, "PVEAPIToken") {
        None => HeaderAuth::Nothing,
        Some(raw) => HeaderAuth::Token(
            percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned()),
        ),
    }
}

/// `verify_token`'s first step: split `TOKENID=SECRET` at the last `=`.
pub fn split_token_value(value: &str) -> Option<(&str, &str)> {
    value.rsplit_once('=')
}
