//! The examples of a Markdown file: its fenced blocks tagged `sh`
//! (`bash`, `shell`), `console` or `toml`, each with the marking written
//! on the line just above its opening fence, if any:
//!
//! ```text
//! <!-- example: skip (needs a real Entra tenant) -->
//! <!-- example: gateway --demo --admin-listen 127.0.0.1:9901 -->
//! <!-- example: env ISSUER=http://localhost:7788 -->
//! <!-- example: config above -->
//! ```
//!
//! Blocks with any other tag (`text`, `promql`, `yaml`, none) are not
//! examples. A marking that cannot be read, or that sits above a block
//! that is not an example, is an error of its own: a typo must never turn
//! an example off silently.

/// How a block's text is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shell commands, one per line (`\` continues a line); each must
    /// exit 0, and one that starts the gateway must bring it up.
    Sh,
    /// `$ command` lines, each followed by the output it must print.
    Console,
    /// A `--config` file: it must parse, start and serve every document.
    Toml,
}

/// What the marking above a block asks for.
#[derive(Debug, Clone, Default)]
pub struct Directives {
    /// `skip (reason)`: not run, with the reason.
    pub skip: Option<String>,
    /// `gateway ARGS`: the gateway running while the block's commands
    /// run (default `--demo`).
    pub gateway: Option<Vec<String>>,
    /// `env NAME=VALUE`: set for the block's commands.
    pub env: Vec<(String, String)>,
    /// `config above`: the gateway runs with the nearest `toml` example
    /// above in the same file as its `--config`.
    pub config_above: bool,
}

/// One example.
#[derive(Debug, Clone)]
pub struct Block {
    /// Repository-relative path of the Markdown file.
    pub file: String,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// How it runs.
    pub kind: Kind,
    /// The lines between the fences, with their 1-based line numbers.
    pub lines: Vec<(usize, String)>,
    /// The marking above it.
    pub directives: Directives,
}

impl Block {
    /// `file:line` of the block, or of one of its lines.
    pub fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.file)
    }

    /// The block's text.
    pub fn text(&self) -> String {
        self.lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
}

/// The examples of `text` (the file `file`), and the errors in its
/// markings as `file:line: message`.
pub fn examples(file: &str, text: &str) -> (Vec<Block>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((fence, tag)) = opening_fence(lines[i]) else {
            if lines[i].trim_start().starts_with("<!-- example:") && !next_is_fence(&lines, i) {
                errors.push(format!(
                    "{file}:{}: a marking must be on the line just above the opening fence of its block",
                    i + 1
                ));
            }
            i += 1;
            continue;
        };
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with(&fence) {
            body.push((i + 1, lines[i].to_string()));
            i += 1;
        }
        i += 1;
        let marking = start
            .checked_sub(1)
            .map(|m| lines[m].trim())
            .filter(|m| m.starts_with("<!-- example:"));
        let directives = match marking.map(parse_marking).transpose() {
            Ok(d) => d.unwrap_or_default(),
            Err(e) => {
                errors.push(format!("{file}:{start}: {e}"));
                continue;
            }
        };
        let kind = match tag.as_str() {
            "sh" | "bash" | "shell" => Kind::Sh,
            "console" => Kind::Console,
            "toml" => Kind::Toml,
            _ => {
                if marking.is_some() {
                    errors.push(format!(
                        "{file}:{}: a marking above a `{tag}` block, which is not an example (only sh, console and toml blocks are)",
                        start + 1
                    ));
                }
                continue;
            }
        };
        blocks.push(Block {
            file: file.to_string(),
            line: start + 1,
            kind,
            lines: body,
            directives,
        });
    }
    (blocks, errors)
}

/// The fence (```` ``` ```` or `~~~`, as long as written) and the tag of
/// an opening fence line.
fn opening_fence(line: &str) -> Option<(String, String)> {
    let t = line.trim_start();
    let c = t.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let fence: String = t.chars().take_while(|x| *x == c).collect();
    if fence.len() < 3 {
        return None;
    }
    let tag = t[fence.len()..].split_whitespace().next().unwrap_or("");
    Some((fence, tag.to_string()))
}

fn next_is_fence(lines: &[&str], i: usize) -> bool {
    lines.get(i + 1).is_some_and(|l| opening_fence(l).is_some())
}

/// `<!-- example: DIRECTIVE; DIRECTIVE -->`.
fn parse_marking(line: &str) -> Result<Directives, String> {
    let inner = line
        .strip_prefix("<!-- example:")
        .and_then(|s| s.strip_suffix("-->"))
        .ok_or("a marking is one line: <!-- example: ... -->")?;
    let mut d = Directives::default();
    // A skip reason is free text, `;` included.
    let directives: Vec<&str> = if inner.trim_start().starts_with("skip") {
        vec![inner.trim()]
    } else {
        inner
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    };
    for directive in directives {
        let (word, rest) = directive.split_once(' ').unwrap_or((directive, ""));
        let rest = rest.trim();
        match word {
            "skip" => {
                let reason = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .ok_or("`skip` needs its reason in parentheses: skip (why it cannot run here)")?;
                d.skip = Some(reason.to_string());
            }
            "gateway" => d.gateway = Some(rest.split_whitespace().map(String::from).collect()),
            "env" => {
                let (k, v) = rest
                    .split_once('=')
                    .ok_or("`env` is written env NAME=VALUE")?;
                d.env.push((k.trim().to_string(), v.trim().to_string()));
            }
            "config" if rest == "above" => d.config_above = true,
            _ => {
                return Err(format!(
                    "unknown directive {directive:?}: the directives are skip (REASON), gateway ARGS, env NAME=VALUE, config above (docs/development.md#examples-in-the-docs)"
                ))
            }
        }
    }
    if d.skip.is_some() && (d.gateway.is_some() || !d.env.is_empty() || d.config_above) {
        return Err("`skip` goes alone: a skipped block runs nothing".to_string());
    }
    Ok(d)
}
