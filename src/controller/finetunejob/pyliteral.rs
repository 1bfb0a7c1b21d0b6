//! Parses the Python-literal text Azure ML stores in model tags (`['Standard_NC24ads_A100_v4', ...]`,
//! `{'apply_lora': 'true', 'precision': 16}`) into JSON values. JSON text parses too.

use serde_json::{Map, Number, Value};

/// Parses a Python literal (str, int, float, True/False/None, list, tuple, dict) or JSON.
pub fn parse(text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected text at position {}", p.i));
    }
    Ok(v)
}

/// Parses a list of strings (an allow list); a bare comma-separated string also works.
pub fn parse_string_list(text: &str) -> Result<Vec<String>, String> {
    match parse(text) {
        Ok(Value::Array(items)) => Ok(items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect()),
        Ok(Value::String(s)) => Ok(split_plain(&s)),
        Ok(other) => Err(format!("expected a list, found {other}")),
        Err(_) => Ok(split_plain(text)),
    }
}

fn split_plain(s: &str) -> Vec<String> {
    s.split(',').map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect()
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at position {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(b'[') => self.seq(b'[', b']'),
            Some(b'(') => self.seq(b'(', b')'),
            Some(b'{') => self.dict(),
            Some(q @ (b'\'' | b'"')) => self.string(q).map(Value::String),
            Some(_) => self.atom(),
            None => Err("unexpected end of text".into()),
        }
    }

    fn seq(&mut self, open: u8, close: u8) -> Result<Value, String> {
        self.expect(open)?;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {}
                _ => return Err(format!("expected ',' or '{}' at position {}", close as char, self.i)),
            }
        }
    }

    fn dict(&mut self) -> Result<Value, String> {
        self.expect(b'{')?;
        let mut map = Map::new();
        loop {
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(Value::Object(map));
            }
            let key = match self.value()? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.expect(b':')?;
            let v = self.value()?;
            map.insert(key, v);
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected ',' or '}}' at position {}", self.i)),
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'\\' => {
                    let Some(&n) = self.s.get(self.i) else { break };
                    self.i += 1;
                    out.push(match n {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                }
                c if c == quote => return String::from_utf8(out).map_err(|e| e.to_string()),
                c => out.push(c),
            }
        }
        Err("unterminated string".into())
    }

    fn atom(&mut self) -> Result<Value, String> {
        let start = self.i;
        while self.i < self.s.len() && !b",:]}) \t\n\r".contains(&self.s[self.i]) {
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        match word {
            "True" | "true" => Ok(Value::Bool(true)),
            "False" | "false" => Ok(Value::Bool(false)),
            "None" | "null" => Ok(Value::Null),
            w => {
                if let Ok(i) = w.parse::<i64>() {
                    Ok(Value::Number(i.into()))
                } else if let Ok(f) = w.parse::<f64>() {
                    Number::from_f64(f).map(Value::Number).ok_or_else(|| format!("bad number {w}"))
                } else {
                    Err(format!("unknown literal '{w}' at position {start}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_list_with_single_quotes() {
        let v = parse_string_list("['Standard_NC24ads_A100_v4', 'Standard_NC48ads_A100_v4']").unwrap();
        assert_eq!(v, vec!["Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4"]);
    }

    #[test]
    fn json_list_and_plain_text() {
        assert_eq!(parse_string_list(r#"["a","b"]"#).unwrap(), vec!["a", "b"]);
        assert_eq!(parse_string_list("a, b").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn python_dict_with_mixed_values() {
        let v =
            parse("{'apply_lora': 'true', 'precision': 16, 'learning_rate': 5e-06, 'x': True, 'y': None}")
                .unwrap();
        assert_eq!(
            v,
            json!({"apply_lora": "true", "precision": 16, "learning_rate": 5e-06, "x": true, "y": null})
        );
    }

    #[test]
    fn json_dict() {
        assert_eq!(parse(r#"{"deepspeed_stage": 2}"#).unwrap(), json!({"deepspeed_stage": 2}));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("{'a': }").is_err());
        assert!(parse("[1, 2").is_err());
    }
}
