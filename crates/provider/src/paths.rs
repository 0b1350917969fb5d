//! Endpoint paths, overridable per provider in the config.
//!
//! Three of the four create endpoints (and Viggle's cancel) are guesses the
//! seed documents do not confirm; a user whose provider differs must be able
//! to correct one without waiting for a release. Each adapter names its
//! defaults in [`defaults`]; [`Paths`] is what the config may set over them;
//! [`Resolved`] is what the adapter sends to.
//!
//! A template is a path under the base URL (`/ugc`, `/render/{id}`,
//! `/status/{id}/`). It is split at `/` into segments that are
//! percent-encoded one by one, with `{id}` replaced by the job id first, so
//! an id can never add a segment or a query.

use serde::{Deserialize, Serialize};
use switchyard_core::ProviderKind;

/// The config's `paths = { create = "/ugc", status = "/ugc/{id}" }`.
/// Unset names keep the adapter's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<String>,
    /// U-Gen's `GET /jobs`, UlazAI's `GET /history/` (also accepted as
    /// `history`).
    #[serde(default, alias = "history", skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
}

/// One adapter's default templates; `None`: the provider has no such call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub create: &'static str,
    pub status: &'static str,
    pub cancel: Option<&'static str>,
    pub list: Option<&'static str>,
}

/// The defaults of each adapter (the module docs of each say which are
/// documented and which are assumed).
pub fn defaults(kind: ProviderKind) -> Defaults {
    match kind {
        ProviderKind::Ugclab => Defaults {
            create: "/ugc",
            status: "/ugc/{id}",
            cancel: Some("/ugc/{id}"),
            list: None,
        },
        ProviderKind::Ugen => Defaults {
            create: "/jobs",
            status: "/jobs/{id}",
            cancel: Some("/jobs/{id}"),
            list: Some("/jobs"),
        },
        ProviderKind::Ulazai => Defaults {
            create: "/generate/",
            status: "/status/{id}/",
            cancel: None,
            list: Some("/history/"),
        },
        ProviderKind::Viggle => Defaults {
            create: "/render",
            status: "/render/{id}",
            cancel: Some("/render/{id}"),
            list: None,
        },
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<String>,
}

const ID: &str = "{id}";

impl Template {
    /// Parses a template; `needs_id` says whether `{id}` must (true) or must
    /// not (false) appear. The error is a message for `check`.
    pub fn parse(text: &str, needs_id: bool) -> Result<Template, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("{text:?} must start with '/'"));
        };
        if text.contains(['?', '#']) || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{text:?} must be a plain path (no query, fragment or spaces)"
            ));
        }
        let ids = text.matches(ID).count();
        if needs_id && ids != 1 {
            return Err(format!("{text:?} must contain {ID} once"));
        }
        if !needs_id && ids > 0 {
            return Err(format!("{text:?} must not contain {ID}"));
        }
        if text.replace(ID, "").contains(['{', '}']) {
            return Err(format!("{text:?}: the only placeholder is {ID}"));
        }
        // A trailing slash stays (a trailing "" segment): UlazAI's paths end in one.
        let segments = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').map(str::to_string).collect()
        };
        if segments
            .iter()
            .rev()
            .skip(1)
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(format!("{text:?} has an empty, '.' or '..' segment"));
        }
        Ok(Template {
            text: text.to_string(),
            segments,
        })
    }

    /// The segments with `{id}` replaced (each is percent-encoded when sent).
    pub fn render(&self, id: &str) -> Vec<String> {
        self.segments.iter().map(|s| s.replace(ID, id)).collect()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What an adapter sends to: the config's overrides over its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub create: Template,
    pub status: Template,
    pub cancel: Option<Template>,
    pub list: Option<Template>,
}

impl Resolved {
    /// Invalid overrides (which `check` reports, so the daemon never starts
    /// with one) fall back to the default, with a warning.
    pub fn new(kind: ProviderKind, overrides: &Paths) -> Resolved {
        let d = defaults(kind);
        let pick = |name: &str, set: &Option<String>, default: &'static str, needs_id: bool| {
            if let Some(text) = set {
                match Template::parse(text, needs_id) {
                    Ok(t) => return t,
                    Err(e) => {
                        tracing::warn!(provider = %kind, "paths.{name}: {e}; using the default")
                    }
                }
            }
            Template::parse(default, needs_id).unwrap_or(Template {
                text: default.to_string(),
                segments: default
                    .trim_start_matches('/')
                    .split('/')
                    .map(str::to_string)
                    .collect(),
            })
        };
        Resolved {
            create: pick("create", &overrides.create, d.create, false),
            status: pick("status", &overrides.status, d.status, true),
            cancel: d.cancel.map(|c| pick("cancel", &overrides.cancel, c, true)),
            list: d.list.map(|l| pick("list", &overrides.list, l, false)),
        }
    }
}

/// Every problem with a provider's overrides, as (name, message).
pub fn problems(kind: ProviderKind, paths: &Paths) -> Vec<(&'static str, String)> {
    let d = defaults(kind);
    let mut out = Vec::new();
    let mut check = |name: &'static str, set: &Option<String>, exists: bool, needs_id: bool| {
        let Some(text) = set else { return };
        if !exists {
            out.push((name, format!("{kind} has no {name} endpoint to override")));
        } else if let Err(e) = Template::parse(text, needs_id) {
            out.push((name, e));
        }
    };
    check("create", &paths.create, true, false);
    check("status", &paths.status, true, true);
    check("cancel", &paths.cancel, d.cancel.is_some(), true);
    check("list", &paths.list, d.list.is_some(), false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_render() {
        let t = Template::parse("/status/{id}/", true).unwrap();
        assert_eq!(t.render("a/b"), ["status", "a/b", ""]);
        assert_eq!(Template::parse("/ugc", false).unwrap().render("x"), ["ugc"]);
        for (bad, needs) in [
            ("ugc", false),
            ("/ugc/{id}", false),
            ("/ugc", true),
            ("/a?b=1", false),
            ("/a//b", false),
            ("/{id}/{id}", true),
            ("/{job}", false),
        ] {
            assert!(Template::parse(bad, needs).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_all_parse_and_problems_name_the_path() {
        for kind in ProviderKind::ALL {
            let r = Resolved::new(kind, &Paths::default());
            assert_eq!(r.create.as_str(), defaults(kind).create);
        }
        let p = Paths {
            cancel: Some("/cancel/{id}".into()),
            status: Some("/status".into()),
            ..Paths::default()
        };
        let names: Vec<_> = problems(ProviderKind::Ulazai, &p)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["status", "cancel"]);
    }
}
