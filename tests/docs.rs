//! Keeps the README and `docs/` true to the repository: the README stays short, every relative
//! link and anchor leads somewhere, and every `make` target they name exists. Plain files only: no
//! cluster, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The README's ceiling: the rest belongs in `docs/`.
const README_MAX_LINES: usize = 300;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md, then every `docs/*.md` in name order.
fn markdown_files() -> Vec<PathBuf> {
    let docs = root().join("docs");
    let entries = fs::read_dir(&docs).unwrap_or_else(|e| panic!("{}: {e}", docs.display()));
    let mut pages: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: {e}", docs.display()))
                .path()
        })
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "no Markdown page in {}", docs.display());
    let mut files = vec![root().join("README.md")];
    files.extend(pages);
    files
}

/// Where a file is, for messages: relative to the repository when inside it.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// One Markdown file taken apart: its prose with code spans blanked (where links are), its code
/// (fenced blocks and inline spans, where commands are), and its headings' anchors.
struct Markdown {
    /// (line number, line) outside fenced blocks, code spans replaced by spaces.
    prose: Vec<(usize, String)>,
    /// (line number where it starts, text) of each fenced block's line and each code span.
    code: Vec<(usize, String)>,
    anchors: BTreeSet<String>,
}

fn is_fence(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start();
    let mark = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let run = trimmed.chars().take_while(|c| *c == mark).count();
    (run >= 3).then_some((mark, run))
}

fn parse(text: &str) -> Markdown {
    let mut markdown = Markdown {
        prose: Vec::new(),
        code: Vec::new(),
        anchors: BTreeSet::new(),
    };
    let mut slugs_seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut fence: Option<(char, usize)> = None;
    let mut paragraph: Vec<(usize, &str)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some((mark, run)) = fence {
            match is_fence(line) {
                Some((m, r)) if m == mark && r >= run && line.trim().chars().all(|c| c == m) => {
                    fence = None;
                }
                _ => markdown.code.push((number, line.to_string())),
            }
            continue;
        }
        if let Some(opening) = is_fence(line) {
            flush_paragraph(&mut paragraph, &mut markdown);
            fence = Some(opening);
            continue;
        }
        if line.trim().is_empty() {
            flush_paragraph(&mut paragraph, &mut markdown);
            continue;
        }
        if let Some(title) = heading(line) {
            flush_paragraph(&mut paragraph, &mut markdown);
            let slug = github_slug(title);
            let seen = slugs_seen.entry(slug.clone()).or_insert(0);
            let anchor = if *seen == 0 {
                slug
            } else {
                format!("{slug}-{seen}")
            };
            *seen += 1;
            markdown.anchors.insert(anchor);
        }
        paragraph.push((number, line));
    }
    flush_paragraph(&mut paragraph, &mut markdown);
    markdown
}

/// A paragraph's code spans may run over lines, never over a blank line: take them out whole.
fn flush_paragraph(paragraph: &mut Vec<(usize, &str)>, markdown: &mut Markdown) {
    let Some(&(first, _)) = paragraph.first() else {
        return;
    };
    let joined = paragraph
        .iter()
        .map(|(_, line)| *line)
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = joined.as_bytes();
    let mut blanked = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|b| **b == b'`').count();
        let mut j = i + run;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let other = bytes[j..].iter().take_while(|b| **b == b'`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        let Some(close) = close else {
            i += run;
            continue;
        };
        let line = first + bytes[..i].iter().filter(|b| **b == b'\n').count();
        markdown
            .code
            .push((line, joined[i + run..close].replace('\n', " ")));
        for byte in &mut blanked[i..close + run] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
        i = close + run;
    }
    // Only ASCII backtick spans were blanked, byte for byte, with ASCII spaces.
    let blanked = String::from_utf8_lossy(&blanked).into_owned();
    for (offset, line) in blanked.lines().enumerate() {
        markdown.prose.push((first + offset, line.to_string()));
    }
    paragraph.clear();
}

/// An ATX heading's text (`## Title ##` gives `Title`).
fn heading(line: &str) -> Option<&str> {
    let level = line.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = line[level..].strip_prefix(' ')?;
    Some(rest.trim().trim_end_matches('#').trim_end())
}

/// GitHub's anchor for a heading: lower case; everything but letters, digits, spaces, hyphens
/// and underscores removed; each space a hyphen.
fn github_slug(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The targets of `[text](target)` links on one line of prose.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            break;
        };
        // `(path "title")` and `(<path>)` are allowed forms; the path is the first word.
        let target = after[..end].split_whitespace().next().unwrap_or("");
        let target = target.trim_start_matches('<').trim_end_matches('>');
        if !target.is_empty() {
            targets.push(target.to_string());
        }
        rest = &after[end + 1..];
    }
    targets
}

fn is_external(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
}

/// The targets named in the Makefile (`name:` at the start of a line; not `VAR := value`).
fn makefile_targets() -> BTreeSet<String> {
    let makefile = read(&root().join("Makefile"));
    let mut targets = BTreeSet::new();
    for line in makefile.lines() {
        if line.starts_with(|c: char| c.is_whitespace() || c == '#' || c == '.') {
            continue;
        }
        let Some((names, after)) = line.split_once(':') else {
            continue;
        };
        if after.starts_with('=') || names.contains('=') || names.contains('$') {
            continue;
        }
        targets.extend(names.split_whitespace().map(str::to_string));
    }
    targets
}

/// The target of each `make ...` in a piece of code: the first word that is not a flag nor a
/// variable assignment; `None` for one that names no target we can check (`make $(X)`, `make`).
fn make_targets_in(code: &str) -> Vec<Option<String>> {
    let mut found = Vec::new();
    for line in code.lines() {
        let mut from = 0;
        while let Some(at) = line[from..].find("make") {
            let start = from + at;
            from = start + "make".len();
            let before = line[..start].chars().next_back();
            let after = line[from..].chars().next();
            let word_starts =
                before.is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')));
            if !word_starts || !after.is_some_and(|c| c == ' ' || c == '\t') {
                continue;
            }
            let mut target = None;
            for word in line[from..].split_whitespace() {
                if word.starts_with('-') || (word.contains('=') && !word.contains('$')) {
                    continue;
                }
                if word.contains('$') || word.starts_with('#') {
                    break;
                }
                let name: String = word
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
                    .collect();
                if !name.is_empty() {
                    target = Some(name);
                }
                break;
            }
            found.push(target);
        }
    }
    found
}

/// A short README is read; a long one is skimmed. What does not fit belongs in `docs/`.
#[test]
fn the_readme_is_at_most_300_lines() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(lines > 0, "README.md is empty");
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move detail into docs/"
    );
}

/// A link that leads nowhere, or to a heading that was renamed or moved to another page, is a
/// promise the docs no longer keep.
#[test]
fn every_relative_link_and_anchor_resolves() {
    let files = markdown_files();
    let mut anchors_of: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    let (mut paths_checked, mut anchors_checked, mut external) = (0usize, 0usize, 0usize);
    for file in &files {
        let markdown = parse(&read(file));
        let dir = file.parent().unwrap_or(root());
        for (line, text) in &markdown.prose {
            for target in link_targets(text) {
                if is_external(&target) {
                    external += 1;
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    paths_checked += 1;
                    let resolved = dir.join(path);
                    if !resolved.exists() {
                        failures.push(format!(
                            "{}:{line}: `{target}`: no such file or directory {}",
                            shown(file),
                            shown(&resolved)
                        ));
                        continue;
                    }
                    resolved
                };
                let Some(anchor) = anchor else {
                    continue;
                };
                if resolved.extension().is_none_or(|ext| ext != "md") {
                    continue;
                }
                anchors_checked += 1;
                let key = resolved.canonicalize().unwrap_or_else(|_| resolved.clone());
                let anchors = anchors_of
                    .entry(key)
                    .or_insert_with(|| parse(&read(&resolved)).anchors);
                if !anchors.contains(anchor) {
                    failures.push(format!(
                        "{}:{line}: `{target}`: {} has no heading with the anchor #{anchor}",
                        shown(file),
                        shown(&resolved)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} broken link(s) in README.md and docs/:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // An empty parse must not pass for a clean one.
    assert!(
        paths_checked >= 20 && anchors_checked >= 5,
        "only {paths_checked} relative link(s) and {anchors_checked} anchor(s) found in {} \
         files (external skipped: {external}): is the link parser broken?",
        files.len()
    );
    eprintln!(
        "checked {paths_checked} relative links and {anchors_checked} anchors in {} files; \
         {external} external links skipped",
        files.len()
    );
}

/// A `make` command the docs give and the Makefile lacks fails the reader at the first step.
#[test]
fn every_make_target_named_exists() {
    let defined = makefile_targets();
    assert!(
        ["demo", "demo-rollout", "test"]
            .iter()
            .all(|target| defined.contains(*target)),
        "the Makefile parse found {defined:?}, without the README's two commands"
    );
    let mut failures = Vec::new();
    let mut named = BTreeSet::new();
    let mut mentions = 0usize;
    for file in markdown_files() {
        for (line, code) in parse(&read(&file)).code {
            for target in make_targets_in(&code).into_iter().flatten() {
                mentions += 1;
                if !defined.contains(&target) {
                    failures.push(format!(
                        "{}:{line}: `make {target}`: no such target in the Makefile",
                        shown(&file)
                    ));
                }
                named.insert(target);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} unknown make target(s) (the Makefile has {defined:?}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        mentions >= 15 && named.len() >= 8,
        "only {mentions} `make` command(s) naming {named:?} found: is the code parser broken?"
    );
    eprintln!(
        "checked {mentions} `make` commands naming {} targets: {named:?}",
        named.len()
    );
}

/// The README is the index: a page it does not link is a page nobody finds.
#[test]
fn the_readme_links_every_docs_page() {
    let readme = parse(&read(&root().join("README.md")));
    let linked: BTreeSet<String> = readme
        .prose
        .iter()
        .flat_map(|(_, line)| link_targets(line))
        .map(|target| target.split('#').next().unwrap_or("").to_string())
        .collect();
    let pages: Vec<PathBuf> = markdown_files().into_iter().skip(1).collect();
    let unlinked: Vec<String> = pages
        .iter()
        .map(|page| shown(page))
        .filter(|page| !linked.contains(page))
        .collect();
    assert!(unlinked.is_empty(), "README.md links none of: {unlinked:?}");
}

/// The README gives `make demo` before `make demo-rollout`, and `tests/demos.rs` runs them in
/// that order; that test needs a cluster, this one keeps the order checked without one.
#[test]
fn the_readme_gives_make_demo_before_make_demo_rollout() {
    let readme = read(&root().join("README.md"));
    let demo = readme
        .find("make demo\n")
        .or_else(|| readme.find("make demo "));
    let rollout = readme.find("make demo-rollout");
    assert!(
        demo.is_some() && rollout.is_some() && demo < rollout,
        "README.md must give `make demo`, then `make demo-rollout` (demo at {demo:?}, \
         demo-rollout at {rollout:?})"
    );
}

/// The link check is only as good as its slugs and its parse: both against cases of our own.
#[test]
fn the_parser_follows_githubs_rules() {
    let slugs = [
        ("Two commands", "two-commands", "plain words"),
        (
            "The API, with the lab's example",
            "the-api-with-the-labs-example",
            "comma and apostrophe removed",
        ),
        (
            "Calls inside the mesh (Istio)",
            "calls-inside-the-mesh-istio",
            "parentheses removed",
        ),
        (
            "`make demo` and_more",
            "make-demo-and_more",
            "backticks removed, underscore kept",
        ),
        ("a  b", "a--b", "each space a hyphen"),
    ];
    for (title, slug, why) in slugs {
        assert_eq!(github_slug(title), slug, "{why}");
    }

    let markdown = parse(
        "# Title\n\nSee [a](a.md#x) and `[not](a link)`, over\n`two\nlines [b](c)`.\n\n\
         ```bash\nmake demo   # [no](link)\n# Not a heading\n```\n\n## Title\n\
         Run `eval $(make -s cluster-env)` or `BENCH_N=5 make bench`; make it so.\n",
    );
    let links: Vec<String> = markdown
        .prose
        .iter()
        .flat_map(|(_, line)| link_targets(line))
        .collect();
    assert_eq!(
        links,
        ["a.md#x"],
        "links outside code spans and blocks only"
    );
    let anchors: Vec<&str> = markdown.anchors.iter().map(String::as_str).collect();
    assert_eq!(anchors, ["title", "title-1"], "a repeated heading gets -1");
    let targets: Vec<Option<String>> = markdown
        .code
        .iter()
        .flat_map(|(_, code)| make_targets_in(code))
        .collect();
    assert_eq!(
        targets,
        [
            Some("demo".to_string()),
            Some("cluster-env".to_string()),
            Some("bench".to_string())
        ],
        "make targets in code only, flags and assignments skipped"
    );
}
