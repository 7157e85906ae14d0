//! A pushed message or event, as the business handler sees it: the routing fields named, the
//! rest of the top-level fields by name, and the plaintext as received.

use std::collections::HashMap;
use std::fmt;

use quick_xml::events::Event;

/// How the account's server URL is configured to receive messages: XML (official accounts,
/// the open platform, mini programs by default) or JSON (mini programs that chose it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Xml,
    Json,
}

/// Why a plaintext push could not be read. The message names a position, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// One push: a user's message, an event, or (on the open platform) a notification.
///
/// WeChat sends a flat document: the root's children are the fields (`ToUserName`,
/// `FromUserName`, `CreateTime`, `MsgType`, `Event`, `InfoType`, …). Those are here by name;
/// nested structures (a menu event's `ScanCodeInfo`, say) are in [`Message::raw`].
#[derive(Clone)]
pub struct Message {
    format: Format,
    raw: String,
    fields: HashMap<String, String>,
    encrypted: bool,
    openid: Option<String>,
}

impl Message {
    /// Parses a plaintext push (after decryption, in safe mode). XML or JSON is recognised from
    /// the first character.
    pub fn parse(plaintext: String) -> Result<Self, ParseError> {
        let body = plaintext.trim_start_matches('\u{feff}').trim_ascii_start();
        let (format, fields) = match body.as_bytes().first() {
            Some(b'<') => (Format::Xml, xml_fields(body)?),
            Some(b'{') => (Format::Json, json_fields(body)?),
            _ => return Err(ParseError("the message is neither XML nor JSON".into())),
        };
        Ok(Self { format, raw: plaintext, fields, encrypted: false, openid: None })
    }

    pub(crate) fn received(mut self, encrypted: bool, openid: Option<String>) -> Self {
        self.encrypted = encrypted;
        self.openid = openid;
        self
    }

    /// A top-level field, as text (JSON numbers in their decimal form).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// `text`, `image`, `event`, … (absent in open-platform notifications).
    pub fn msg_type(&self) -> Option<&str> {
        self.get("MsgType")
    }

    /// With `MsgType` `event`: `subscribe`, `SCAN`, `CLICK`, `wxa_media_check`, …
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// Open-platform notifications: `component_verify_ticket`, `authorized`, `unauthorized`, …
    pub fn info_type(&self) -> Option<&str> {
        self.get("InfoType")
    }

    pub fn from_user(&self) -> Option<&str> {
        self.get("FromUserName")
    }

    pub fn to_user(&self) -> Option<&str> {
        self.get("ToUserName")
    }

    pub fn create_time(&self) -> Option<u64> {
        self.get("CreateTime")?.parse().ok()
    }

    /// The user's openid from the query string, which WeChat adds to official-account and
    /// mini-program pushes.
    pub fn openid(&self) -> Option<&str> {
        self.openid.as_deref()
    }

    /// The plaintext as received (after decryption), for fields this type does not name.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the push came encrypted (safe or compatible mode); a passive reply to it is
    /// encrypted back.
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// The fields by name.
    pub fn fields(&self) -> &HashMap<String, String> {
        &self.fields
    }
}

/// Shows what routed the message, never its content: a push can carry a credential (the open
/// platform's `ComponentVerifyTicket`, an `AuthorizationCode`) or a user's words.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.fields.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Message")
            .field("format", &self.format)
            .field("msg_type", &self.msg_type())
            .field("event", &self.event())
            .field("info_type", &self.info_type())
            .field("encrypted", &self.encrypted)
            .field("fields", &names)
            .finish_non_exhaustive()
    }
}

/// The text of each child of the root that holds only text. quick-xml's reader is iterative, so
/// nesting costs no stack.
fn xml_fields(body: &str) -> Result<HashMap<String, String>, ParseError> {
    let mut reader = quick_xml::Reader::from_str(body);
    let mut fields = HashMap::new();
    let mut depth = 0usize;
    let mut roots = 0usize;
    // The field being read, and whether it turned out to hold elements.
    let mut current: Option<(String, String, bool)> = None;
    let error = |reader: &quick_xml::Reader<&[u8]>| {
        ParseError(format!("invalid XML near byte {}", reader.error_position()))
    };
    loop {
        match reader.read_event().map_err(|_| error(&reader))? {
            Event::Start(start) => {
                match depth {
                    0 => roots += 1,
                    1 => {
                        let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                        current = Some((name, String::new(), false));
                    }
                    _ => {
                        if let Some((_, _, nested)) = current.as_mut() {
                            *nested = true;
                        }
                    }
                }
                depth += 1;
            }
            Event::Empty(empty) => match depth {
                0 => roots += 1,
                1 => {
                    let name = String::from_utf8_lossy(empty.name().as_ref()).into_owned();
                    fields.insert(name, String::new());
                }
                _ => {
                    if let Some((_, _, nested)) = current.as_mut() {
                        *nested = true;
                    }
                }
            },
            Event::End(_) => {
                depth = depth.checked_sub(1).ok_or_else(|| ParseError("unbalanced end tag".into()))?;
                if depth == 1
                    && let Some((name, value, nested)) = current.take()
                    && !nested
                {
                    fields.insert(name, value.trim_ascii().to_owned());
                }
            }
            Event::Text(text) if depth == 2 => {
                if let Some((_, value, _)) = current.as_mut() {
                    value.push_str(&text.unescape().map_err(|_| error(&reader))?);
                }
            }
            Event::CData(data) if depth == 2 => {
                if let Some((_, value, _)) = current.as_mut() {
                    value.push_str(
                        std::str::from_utf8(&data).map_err(|_| ParseError("CDATA is not UTF-8".into()))?,
                    );
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    match (roots, depth) {
        (1, 0) => Ok(fields),
        (0, _) => Err(ParseError("no root element".into())),
        (_, 0) => Err(ParseError("more than one root element".into())),
        _ => Err(ParseError("unclosed element".into())),
    }
}

fn json_fields(body: &str) -> Result<HashMap<String, String>, ParseError> {
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| ParseError(format!("invalid JSON at line {} column {}", e.line(), e.column())))?;
    let serde_json::Value::Object(object) = value else {
        return Err(ParseError("the JSON message is not an object".into()));
    };
    Ok(object
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (name, text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn xml_fields_by_name_nested_ones_left_in_raw() {
        let m = Message::parse(
            "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oU]]></FromUserName>\
             <CreateTime>1409735668</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[scancode_push]]></Event>\
             <ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType></ScanCodeInfo><Note>a &amp; b</Note><Empty/></xml>"
                .into(),
        )
        .unwrap();
        assert_eq!(m.format(), Format::Xml);
        assert_eq!(m.to_user(), Some("gh_1"));
        assert_eq!(m.from_user(), Some("oU"));
        assert_eq!(m.create_time(), Some(1_409_735_668));
        assert_eq!(m.msg_type(), Some("event"));
        assert_eq!(m.event(), Some("scancode_push"));
        assert_eq!(m.get("Note"), Some("a & b"));
        assert_eq!(m.get("Empty"), Some(""));
        assert_eq!(m.get("ScanCodeInfo"), None);
        assert_eq!(m.get("ScanType"), None);
        assert!(m.raw().contains("<ScanType>"));
    }

    #[test]
    fn json_fields_numbers_as_text() {
        let m = Message::parse(r#"{"ToUserName":"gh_9","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","x":{"a":1}}"#.into())
            .unwrap();
        assert_eq!(m.format(), Format::Json);
        assert_eq!(m.create_time(), Some(1_714_112_445));
        assert_eq!(m.event(), Some("debug_demo"));
        assert_eq!(m.get("x"), Some(r#"{"a":1}"#));
    }

    #[test]
    fn garbage_is_an_error_naming_no_content() {
        for bad in [
            "",
            "hello",
            "<xml><a>1</b></xml>",
            "<a/><b/>",
            "<xml><a>",
            "{\"a\":",
            "[1,2]",
            "<xml><a>&secret;</a></xml>",
        ] {
            let err = Message::parse(bad.into()).expect_err(bad);
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn debug_shows_routing_never_content() {
        let m = Message::parse(
            "<xml><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>ticket@@@s3cr3t</ComponentVerifyTicket></xml>".into(),
        )
        .unwrap();
        let debug = format!("{m:?}");
        assert!(debug.contains("component_verify_ticket"), "{debug}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    proptest! {
        #[test]
        fn parse_never_panics(body in ".{0,400}") {
            let _ = Message::parse(body);
        }

        #[test]
        fn parse_never_panics_on_xml_like_input(body in "(<[a-zA-Z/!\\[]{0,3}[a-zA-Z]{0,4}>?|[a-z&;]{0,4}|<!\\[CDATA\\[|\\]\\]>){0,40}") {
            let _ = Message::parse(body);
        }
    }
}
