//! Subscribe-message template data that WeChat will accept.
//!
//! WeChat refuses a whole message (errcode 47003, "argument invalid") when one value is longer
//! than its keyword type allows, and the limits are in characters, not bytes: 20 for `thing`,
//! 5 for `phrase`, and so on (the official table "订阅消息参数值内容限制"). Business data
//! (a product name, an address) is routinely longer, so [`TemplateData`] cuts each value to
//! its keyword's limit on a character boundary, and refuses early what no cutting can fix: an
//! empty value, a control character, digits in a `phrase`, letters in a `number`.

use crate::error::{Error, Result};
use serde_json::{Map, Value, json};

/// A template keyword's type: the part of the key before its number (`thing` in `thing1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    /// 20 characters: Chinese, digits, letters or symbols.
    Thing,
    /// 32 digits, may carry a decimal point.
    Number,
    /// 32 letters.
    Letter,
    /// 5 symbols.
    Symbol,
    /// 32 digits, letters or symbols.
    CharacterString,
    /// A 24-hour time, optionally with a date or as a range with `~`: never cut.
    Time,
    /// A date, optionally with a time or as a range with `~`: never cut.
    Date,
    /// A currency symbol and up to 10 digits: never cut, a cut amount is a wrong amount.
    Amount,
    /// 17 digits and symbols.
    PhoneNumber,
    /// 8 characters, e.g. 粤A8Z888挂.
    CarNumber,
    /// 10 Chinese characters, or 20 letters when the name has no Chinese.
    Name,
    /// 5 Chinese characters, e.g. 配送中.
    Phrase,
    /// One of the values the template defines: never cut.
    Enum,
}

impl Keyword {
    /// The type of a key such as `thing1`, `character_string2` or `number01`.
    pub fn of_key(key: &str) -> Option<Self> {
        let prefix = key.trim_end_matches(|c: char| c.is_ascii_digit());
        if prefix.len() == key.len() {
            return None;
        }
        Some(match prefix {
            "thing" => Self::Thing,
            "number" => Self::Number,
            "letter" => Self::Letter,
            "symbol" => Self::Symbol,
            "character_string" => Self::CharacterString,
            "time" => Self::Time,
            "date" => Self::Date,
            "amount" => Self::Amount,
            "phone_number" => Self::PhoneNumber,
            "car_number" => Self::CarNumber,
            "name" => Self::Name,
            "phrase" => Self::Phrase,
            "enum" => Self::Enum,
            _ => return None,
        })
    }

    /// The most characters `value` may have for this type; `None` for types that are never cut.
    pub fn limit(self, value: &str) -> Option<usize> {
        match self {
            Self::Thing => Some(20),
            Self::Number | Self::Letter | Self::CharacterString => Some(32),
            Self::Symbol | Self::Phrase => Some(5),
            Self::PhoneNumber => Some(17),
            Self::CarNumber => Some(8),
            // "中文和字母混合按中文名算": one non-ASCII character makes it a Chinese name.
            Self::Name => Some(if value.is_ascii() { 20 } else { 10 }),
            Self::Time | Self::Date | Self::Amount | Self::Enum => None,
        }
    }

    /// `value` cut to this type's limit, or why WeChat would refuse it anyway.
    pub fn fit(self, value: &str) -> std::result::Result<String, String> {
        if value.trim().is_empty() {
            return Err("is empty".into());
        }
        if value.chars().any(char::is_control) {
            return Err("holds a control character (a line break, say)".into());
        }
        let cut: String = match self.limit(value) {
            Some(n) => value.chars().take(n).collect(),
            None => value.to_owned(),
        };
        match self {
            Self::Number if !is_decimal(&cut) => {
                Err("a number keyword takes digits and one decimal point".into())
            }
            Self::Letter if !cut.chars().all(|c| c.is_ascii_alphabetic()) => {
                Err("a letter keyword takes letters only".into())
            }
            Self::Phrase if !cut.chars().all(is_han) => {
                Err("a phrase keyword takes Chinese characters only".into())
            }
            _ => Ok(cut),
        }
    }
}

fn is_decimal(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac)
}

/// CJK unified ideographs (with extension A and the compatibility block).
fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}')
}

/// The `data` of a subscribe message: keys in the template's order, values fitted on
/// [`TemplateData::build`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateData {
    values: Vec<(String, String)>,
}

impl TemplateData {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (e.g. `thing1`) to `value`; a later value for the same key replaces it.
    pub fn value(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.values.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.values.push((key, value)),
        }
        self
    }

    /// WeChat's `{"thing1":{"value":"…"}, …}` with every value cut to its limit, or the first
    /// key whose value cannot be sent.
    pub fn build(&self) -> Result<Value> {
        if self.values.is_empty() {
            return Err(Error::InvalidTemplateValue { key: String::new(), reason: "no values".into() });
        }
        let mut data = Map::new();
        for (key, value) in &self.values {
            let invalid = |reason: String| Error::InvalidTemplateValue { key: key.clone(), reason };
            let keyword = Keyword::of_key(key).ok_or_else(|| {
                invalid("is not a keyword key such as thing1, number2 or character_string3".into())
            })?;
            let fitted = keyword.fit(value).map_err(invalid)?;
            data.insert(key.clone(), json!({ "value": fitted }));
        }
        Ok(Value::Object(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fitted(key: &str, value: &str) -> String {
        let data = TemplateData::new().value(key, value).build().unwrap();
        data[key]["value"].as_str().unwrap().to_owned()
    }

    #[test]
    fn keys_name_their_type() {
        assert_eq!(Keyword::of_key("thing1"), Some(Keyword::Thing));
        assert_eq!(Keyword::of_key("character_string12"), Some(Keyword::CharacterString));
        assert_eq!(Keyword::of_key("number01"), Some(Keyword::Number));
        assert_eq!(Keyword::of_key("phone_number3"), Some(Keyword::PhoneNumber));
        assert_eq!(Keyword::of_key("thing"), None);
        assert_eq!(Keyword::of_key("things1"), None);
        assert_eq!(Keyword::of_key("1"), None);
    }

    #[test]
    fn values_are_cut_in_characters_not_bytes() {
        let long = "一二三四五六七八九十".repeat(3);
        let cut = fitted("thing1", &long);
        assert_eq!(cut.chars().count(), 20);
        assert!(long.starts_with(&cut));
        assert_eq!(fitted("phrase2", "配送中已经签收"), "配送中已经");
        assert_eq!(fitted("character_string3", &"A1-".repeat(20)).chars().count(), 32);
        assert_eq!(fitted("phone_number4", "+86-0766-66888866-123"), "+86-0766-66888866");
        assert_eq!(fitted("car_number5", "粤A8Z888挂XYZ"), "粤A8Z888挂");
        assert_eq!(fitted("symbol6", "!@#$%^&"), "!@#$%");
        assert_eq!(fitted("number7", &"9".repeat(40)).len(), 32);
        assert_eq!(fitted("letter8", &"ab".repeat(20)).len(), 32);
    }

    #[test]
    fn short_values_and_uncut_types_pass_unchanged() {
        assert_eq!(fitted("thing1", "咖啡"), "咖啡");
        let time = "2019年10月1日 15:01 ~ 2019年10月2日 15:01";
        assert_eq!(fitted("time2", time), time);
        assert_eq!(fitted("date3", time), time);
        assert_eq!(fitted("amount4", "¥12345678.90元"), "¥12345678.90元");
        assert_eq!(fitted("thing5", &"x".repeat(20)), "x".repeat(20));
    }

    #[test]
    fn names_count_as_chinese_when_any_character_is() {
        assert_eq!(fitted("name1", &"a".repeat(25)), "a".repeat(20));
        assert_eq!(fitted("name1", "张三丰张三丰张三丰张三丰"), "张三丰张三丰张三丰张");
        assert_eq!(fitted("name1", "Li张abcdefghijklmn").chars().count(), 10);
    }

    #[test]
    fn values_no_cut_can_fix_are_refused_with_their_key() {
        for (key, value) in [
            ("thing1", ""),
            ("thing1", "   "),
            ("thing1", "line\nbreak"),
            ("number2", "12a"),
            ("number2", "1.2.3"),
            ("number2", ".5"),
            ("letter3", "abc1"),
            ("phrase4", "OK了"),
            ("unknown5", "x"),
            ("thing", "x"),
        ] {
            match TemplateData::new().value("thing9", "ok").value(key, value).build() {
                Err(Error::InvalidTemplateValue { key: k, reason }) => {
                    assert_eq!(k, key, "{value:?}: {reason}");
                }
                other => panic!("{key}={value:?}: {other:?}"),
            }
        }
        assert!(TemplateData::new().build().is_err());
    }

    #[test]
    fn a_later_value_for_a_key_wins() {
        let data = TemplateData::new().value("thing1", "a").value("time2", "15:01").value("thing1", "b");
        let v = data.build().unwrap();
        assert_eq!(v, json!({ "thing1": { "value": "b" }, "time2": { "value": "15:01" } }));
    }
}
