//! AMQP URIs: `amqp[s]://user:password@host:port/vhost?heartbeat=N`.
//!
//! The password is kept out of every `Debug`/`Display` output: logs and error messages only ever
//! see [`BrokerUri::redacted`].

use crate::error::{Error, Result};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};

/// See [`BrokerUri::to_lapin`].
const DEFAULT_FRAME_MAX: u32 = 32 * 1024;
use percent_encoding::percent_decode_str;
use std::fmt;
use url::Url;

/// One broker address, parsed and percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUri {
    /// `amqps://`: connect with TLS.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    password: String,
    /// The vhost from the path (`/` when the path is empty).
    pub vhost: String,
    /// `?heartbeat=N` from the query string, when given.
    pub heartbeat: Option<u16>,
    /// `?connection_timeout=MS` from the query string, when given.
    pub connection_timeout_ms: Option<u64>,
    /// `?frame_max=N`, when given.
    pub frame_max: Option<u32>,
}

impl BrokerUri {
    /// Parses one URI. Errors name `option` (the option the URI came from) and never echo the
    /// password.
    pub fn parse(uri: &str, option: &str) -> Result<Self> {
        let shown = redact_uri_text(uri);
        let bad = |why: String| {
            Error::option(option, format!("'{shown}' is not a valid AMQP URI: {why}"))
        };
        let url = Url::parse(uri.trim()).map_err(|e| bad(e.to_string()))?;
        let tls = match url.scheme() {
            "amqp" => false,
            "amqps" => true,
            other => return Err(bad(format!("scheme '{other}' (expected amqp or amqps)"))),
        };
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => return Err(bad("no host".into())),
        };
        let decode = |s: &str, what: &str| -> Result<String> {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| bad(format!("{what} is not valid UTF-8 after percent-decoding")))
        };
        let user = match url.username() {
            "" => "guest".to_string(),
            u => decode(u, "user")?,
        };
        let password = match url.password() {
            None => "guest".to_string(),
            Some(p) => decode(p, "password")?,
        };
        let path = url.path();
        let vhost = match path.strip_prefix('/').unwrap_or(path) {
            "" => "/".to_string(),
            v => decode(v, "vhost")?,
        };
        let mut heartbeat = None;
        let mut connection_timeout_ms = None;
        let mut frame_max = None;
        for (key, value) in url.query_pairs() {
            let int = |v: &str| -> Result<u64> {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("query parameter {key}={v} is not a whole number")))
            };
            match key.as_ref() {
                "heartbeat" => {
                    heartbeat = Some(u16::try_from(int(&value)?).map_err(|_| {
                        bad(format!("heartbeat={value} is larger than 65535 seconds"))
                    })?)
                }
                "connection_timeout" => connection_timeout_ms = Some(int(&value)?),
                "frame_max" => {
                    frame_max = Some(
                        u32::try_from(int(&value)?)
                            .map_err(|_| bad(format!("frame_max={value} is too large")))?,
                    )
                }
                _ => {} // TLS file options and the like are accepted and ignored, as Bunny does.
            }
        }
        let port = url.port().unwrap_or(if tls { 5671 } else { 5672 });
        Ok(BrokerUri {
            tls,
            host,
            port,
            user,
            password,
            vhost,
            heartbeat,
            connection_timeout_ms,
            frame_max,
        })
    }

    /// Parses the `amqp` option: one URI, or several separated by commas or whitespace
    /// (the nodes of a cluster, tried in order).
    pub fn parse_list(uris: &[String], option: &str) -> Result<Vec<Self>> {
        let list: Vec<BrokerUri> = uris
            .iter()
            .flat_map(|u| u.split([',', ' ', '\n', '\t']))
            .filter(|u| !u.trim().is_empty())
            .map(|u| BrokerUri::parse(u, option))
            .collect::<Result<_>>()?;
        if list.is_empty() {
            return Err(Error::option(option, "no broker URI given"));
        }
        Ok(list)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URI with the password replaced by `***`: safe for logs and errors.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let vhost = if self.vhost == "/" {
            String::new()
        } else {
            percent_encoding::utf8_percent_encode(&self.vhost, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        };
        format!(
            "{scheme}://{}:***@{}:{}/{vhost}",
            self.user, self.host, self.port
        )
    }

    /// The lapin form, with the vhost and heartbeat the options settled on.
    ///
    /// `frame_max` defaults to 32 KiB instead of the broker's 128 KiB: lapin gives every
    /// connection two ring buffers of 32 frames, which become fully resident as they wrap, so
    /// 128 KiB frames cost 8 MiB of RSS per connection and 32 KiB frames 2 MiB. Bodies above
    /// 32 KiB travel in more frames, which costs little next to their copying.
    pub(crate) fn to_lapin(&self, vhost: &str, heartbeat: u16) -> AMQPUri {
        AMQPUri {
            scheme: if self.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.user.clone(),
                    password: self.password.clone(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: vhost.to_string(),
            query: AMQPQueryString {
                frame_max: Some(self.frame_max.unwrap_or(DEFAULT_FRAME_MAX)),
                heartbeat: Some(self.heartbeat.unwrap_or(heartbeat)),
                connection_timeout: Some(self.connection_timeout_ms.unwrap_or(10_000)),
                ..Default::default()
            },
        }
    }
}

impl fmt::Debug for BrokerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for BrokerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces the password of a URI-looking text with `***`, even when the text does not parse.
/// Used for error messages and for redacted `inspect`s of raw options.
pub fn redact_uri_text(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &text[..scheme_end + 3],
            &authority[..colon],
            &text[scheme_end + 3 + at..]
        ),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_part_and_decodes() {
        let u = BrokerUri::parse(
            "amqps://us%40er:p%2Fss@rabbit.example:5999/my%2Fvhost?heartbeat=7&connection_timeout=500",
            "amqp",
        )
        .unwrap();
        assert!(u.tls);
        assert_eq!(u.host, "rabbit.example");
        assert_eq!(u.port, 5999);
        assert_eq!(u.user, "us@er");
        assert_eq!(u.password(), "p/ss");
        assert_eq!(u.vhost, "my/vhost");
        assert_eq!(u.heartbeat, Some(7));
        assert_eq!(u.connection_timeout_ms, Some(500));
    }

    #[test]
    fn defaults_and_ip_hosts() {
        let u = BrokerUri::parse("amqp://10.1.2.3", "amqp").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("10.1.2.3", 5672));
        assert_eq!((u.user.as_str(), u.password()), ("guest", "guest"));
        assert_eq!(u.vhost, "/");
        assert_eq!(BrokerUri::parse("amqp://h/", "amqp").unwrap().vhost, "/");
        assert_eq!(BrokerUri::parse("amqp://h/%2f", "amqp").unwrap().vhost, "/");
        assert_eq!(BrokerUri::parse("amqps://h", "amqp").unwrap().port, 5671);
        assert_eq!(
            BrokerUri::parse("amqp://[::1]:1234", "amqp").unwrap().host,
            "::1"
        );
    }

    #[test]
    fn errors_name_the_option_and_hide_the_password() {
        for bad in [
            "http://u:secret@h",
            "amqp://u:secret@h:notaport",
            "not a uri",
            "amqp://u:secret@h?heartbeat=x",
            "amqp://u:secret@h?heartbeat=70000",
        ] {
            let e = BrokerUri::parse(bad, "amqp").unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("invalid option `amqp`"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn frame_max_defaults_to_32_kib_unless_the_uri_sets_it() {
        let lapin = |uri: &str| BrokerUri::parse(uri, "amqp").unwrap().to_lapin("/", 30);
        assert_eq!(lapin("amqp://h").query.frame_max, Some(32 * 1024));
        assert_eq!(
            lapin("amqp://h?frame_max=131072").query.frame_max,
            Some(131_072)
        );
    }

    #[test]
    fn never_shows_the_password() {
        let u = BrokerUri::parse("amqp://bob:hunter2@h:1/v", "amqp").unwrap();
        assert_eq!(u.redacted(), "amqp://bob:***@h:1/v");
        assert!(!format!("{u:?} {u}").contains("hunter2"));
        assert_eq!(
            redact_uri_text("amqp://bob:hunter2@h:1/v"),
            "amqp://bob:***@h:1/v"
        );
        assert_eq!(redact_uri_text("amqp://h:1/v"), "amqp://h:1/v");
    }

    #[test]
    fn lists_fail_over_in_order() {
        let l = BrokerUri::parse_list(&["amqp://a, amqp://b".into(), "amqp://c".into()], "amqp")
            .unwrap();
        let hosts: Vec<_> = l.iter().map(|u| u.host.as_str()).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
        assert!(BrokerUri::parse_list(&[" ".into()], "amqp").is_err());
    }
}
