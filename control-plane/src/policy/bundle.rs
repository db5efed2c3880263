//! Loading a policy directory into a validated [`PolicyBundle`]: the schema, every policy file,
//! and the entities (users and groups). Nothing partial is ever returned — a directory either
//! loads whole and valid, or is refused with an error naming the file, the policy and what is
//! wrong.
//!
//! Rules a directory must meet:
//! - `loupe.cedarschema` (Cedar schema syntax); any schema warning refuses it.
//! - One or more `*.cedar` files, read in name order. Every policy carries `@id("…")`
//!   (`[A-Za-z0-9_.-]`, at most 64 bytes, unique across files); every `forbid` carries
//!   `@reason("…")`, the explanation a refused caller sees. A `forbid` that an approval lifts
//!   also carries `@approval_from("<group>")`, naming a group in the entities file: a request
//!   refused only by such policies is one to hold for approval rather than deny. No templates.
//! - The whole set validates against the schema in strict mode; a validator warning (e.g. a
//!   policy that can never apply) refuses it too, because a silently dead `forbid` is a hole.
//! - `entities.json` (Cedar's entity JSON) holds only `User` and `Group` entities, conforming to
//!   the schema, with ids that pass [`UserId::parse`] and [`check_group_name`]. Services,
//!   points and namespaces are never read from files: the engine builds them per request.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Effect, Entities, EvalResult, PolicyId, PolicySet, Schema, ValidationMode, Validator,
};

use super::names::{NameError, UserId, check_group_name};

/// The schema's file name inside a policy directory.
pub const SCHEMA_FILE: &str = "loupe.cedarschema";
/// The entities' file name inside a policy directory.
pub const ENTITIES_FILE: &str = "entities.json";
/// How policy files end.
pub const POLICY_EXTENSION: &str = "cedar";
/// The annotation that marks a `forbid` an approval from a group lifts.
pub const APPROVAL_ANNOTATION: &str = "approval_from";
/// Longest policy id accepted.
pub const MAX_POLICY_ID_LEN: usize = 64;

/// One validator finding, tied to the policy and the file it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub policy_id: String,
    pub file: PathBuf,
    pub message: String,
}

/// Why a policy directory was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no {POLICY_EXTENSION} policy files", dir.display())]
    NoPolicyFiles { dir: PathBuf },
    #[error("schema {} is invalid: {message}", path.display())]
    Schema { path: PathBuf, message: String },
    #[error("{} does not parse: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: policy #{index} (counting from 1) has no @id(\"…\") annotation", path.display())]
    MissingId { path: PathBuf, index: usize },
    #[error("{}: policy id {id:?} must be 1 to {MAX_POLICY_ID_LEN} bytes of [A-Za-z0-9_.-]", path.display())]
    BadId { path: PathBuf, id: String },
    #[error("policy id {id:?} is used in {} and again in {}", first.display(), second.display())]
    DuplicateId {
        id: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}: forbid policy {id:?} has no @reason(\"…\") annotation to explain its denials", path.display())]
    MissingReason { path: PathBuf, id: String },
    #[error("{}: templates are not supported (policy {id:?})", path.display())]
    Template { path: PathBuf, id: String },
    #[error("policies do not validate against the schema: {}", render_problems(problems))]
    Invalid { problems: Vec<PolicyProblem> },
    #[error("entities {} are invalid: {message}", path.display())]
    Entities { path: PathBuf, message: String },
    #[error("entities {}: {uid} is not allowed: {why}", path.display())]
    EntityNotAllowed {
        path: PathBuf,
        uid: String,
        why: String,
    },
    #[error("entities {}: {source}", path.display())]
    EntityName {
        path: PathBuf,
        #[source]
        source: NameError,
    },
}

fn render_problems(problems: &[PolicyProblem]) -> String {
    problems
        .iter()
        .map(|p| {
            format!(
                "policy {:?} in {}: {}",
                p.policy_id,
                p.file.display(),
                p.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A user from the entities file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownUser {
    pub id: UserId,
    /// The `name` attribute: how denials and approver lists show the user.
    pub name: String,
}

/// A loaded, validated policy directory. Immutable; the engine swaps whole bundles.
#[derive(Debug)]
pub struct PolicyBundle {
    pub(crate) dir: PathBuf,
    pub(crate) schema: Schema,
    pub(crate) policies: PolicySet,
    /// The same set without the `@approval_from` forbids: what would decide once approved.
    pub(crate) approved_policies: PolicySet,
    pub(crate) entities: Entities,
    pub(crate) files: BTreeMap<String, PathBuf>,
    pub(crate) users: Vec<KnownUser>,
    pub(crate) version: String,
}

impl PolicyBundle {
    /// Loads and validates `dir` (see the module docs for the rules).
    pub fn load(dir: impl AsRef<Path>) -> Result<PolicyBundle, PolicyError> {
        let dir = dir.as_ref().to_path_buf();
        let mut hashed: Vec<(String, Vec<u8>)> = Vec::new();

        let schema_path = dir.join(SCHEMA_FILE);
        let schema_text = read(&schema_path)?;
        let (schema, warnings) =
            Schema::from_cedarschema_str(&schema_text).map_err(|e| PolicyError::Schema {
                path: schema_path.clone(),
                message: e.to_string(),
            })?;
        let warnings: Vec<String> = warnings.map(|w| w.to_string()).collect();
        if !warnings.is_empty() {
            return Err(PolicyError::Schema {
                path: schema_path,
                message: format!("warnings: {}", warnings.join("; ")),
            });
        }
        hashed.push((SCHEMA_FILE.to_owned(), schema_text.into_bytes()));

        let mut policies = PolicySet::new();
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in policy_files(&dir)? {
            let text = read(&path)?;
            add_policy_file(&path, &text, &mut policies, &mut files)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            hashed.push((name, text.into_bytes()));
        }

        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        let mut problems: Vec<PolicyProblem> = validation
            .validation_errors()
            .map(|e| problem(&files, e.policy_id(), e.to_string()))
            .chain(
                validation
                    .validation_warnings()
                    .map(|w| problem(&files, w.policy_id(), format!("warning: {w}"))),
            )
            .collect();
        if !problems.is_empty() {
            problems.sort_by(|a, b| (&a.file, &a.policy_id).cmp(&(&b.file, &b.policy_id)));
            return Err(PolicyError::Invalid { problems });
        }

        let entities_path = dir.join(ENTITIES_FILE);
        let entities_text = read(&entities_path)?;
        let entities = Entities::from_json_str(&entities_text, Some(&schema)).map_err(|e| {
            PolicyError::Entities {
                path: entities_path.clone(),
                message: e.to_string(),
            }
        })?;
        let users = check_entities(&entities_path, &entities)?;
        let approved_policies = without_approval_gates(&policies, &entities, &files)?;
        hashed.push((ENTITIES_FILE.to_owned(), entities_text.into_bytes()));

        Ok(PolicyBundle {
            dir,
            schema,
            policies,
            approved_policies,
            entities,
            files,
            users,
            version: digest(&hashed),
        })
    }

    /// The directory this bundle was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hex SHA-256 over the schema, policy and entities files (names and contents, in load
    /// order): what audit events record as the policy version behind a decision.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every policy id, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// The file a policy came from.
    pub fn policy_file(&self, policy_id: &str) -> Option<&Path> {
        self.files.get(policy_id).map(PathBuf::as_path)
    }

    /// An annotation of a policy (`reason`, or any other the policy files use).
    pub fn annotation(&self, policy_id: &str, key: &str) -> Option<&str> {
        self.policies.annotation(&PolicyId::new(policy_id), key)
    }

    /// Users from the entities file, sorted by id.
    pub fn users(&self) -> &[KnownUser] {
        &self.users
    }

    /// A known user, by id.
    pub fn user(&self, id: &UserId) -> Option<&KnownUser> {
        self.users
            .binary_search_by(|u| u.id.cmp(id))
            .ok()
            .map(|i| &self.users[i])
    }
}

fn read(path: &Path) -> Result<String, PolicyError> {
    fs::read_to_string(path).map_err(|source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = fs::read_dir(dir).map_err(|source| PolicyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PolicyError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == POLICY_EXTENSION) && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(PolicyError::NoPolicyFiles {
            dir: dir.to_path_buf(),
        });
    }
    paths.sort();
    Ok(paths)
}

fn add_policy_file(
    path: &Path,
    text: &str,
    into: &mut PolicySet,
    files: &mut BTreeMap<String, PathBuf>,
) -> Result<(), PolicyError> {
    let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if let Some(template) = parsed.templates().next() {
        return Err(PolicyError::Template {
            path: path.to_path_buf(),
            id: template
                .annotation("id")
                .map(str::to_owned)
                .unwrap_or_else(|| template.id().to_string()),
        });
    }
    // Cedar numbers a file's policies policy0, policy1, … in order; sort by that number so errors
    // count policies the way the file does.
    let mut in_file: Vec<_> = parsed.policies().collect();
    in_file.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    for (index, policy) in in_file.into_iter().enumerate() {
        let Some(id) = policy.annotation("id") else {
            return Err(PolicyError::MissingId {
                path: path.to_path_buf(),
                index: index + 1,
            });
        };
        let id_ok = !id.is_empty()
            && id.len() <= MAX_POLICY_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !id_ok {
            return Err(PolicyError::BadId {
                path: path.to_path_buf(),
                id: id.to_owned(),
            });
        }
        if let Some(first) = files.get(id) {
            return Err(PolicyError::DuplicateId {
                id: id.to_owned(),
                first: first.clone(),
                second: path.to_path_buf(),
            });
        }
        if policy.effect() == Effect::Forbid && policy.annotation("reason").is_none() {
            return Err(PolicyError::MissingReason {
                path: path.to_path_buf(),
                id: id.to_owned(),
            });
        }
        into.add(policy.new_id(PolicyId::new(id)))
            .map_err(|e| PolicyError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        files.insert(id.to_owned(), path.to_path_buf());
    }
    Ok(())
}

/// The set without its approval gates, after checking that each gate names a known group.
fn without_approval_gates(
    policies: &PolicySet,
    entities: &Entities,
    files: &BTreeMap<String, PathBuf>,
) -> Result<PolicySet, PolicyError> {
    let groups: Vec<String> = entities
        .iter()
        .map(|e| e.uid())
        .filter(|uid| uid.type_name().to_string() == "Group")
        .map(|uid| uid.id().unescaped().to_owned())
        .collect();
    let mut approved = PolicySet::new();
    for policy in policies.policies() {
        let id = policy.id().to_string();
        match policy.annotation(APPROVAL_ANNOTATION) {
            Some(group) if policy.effect() == Effect::Forbid => {
                if !groups.iter().any(|g| g == group) {
                    return Err(PolicyError::Invalid {
                        problems: vec![PolicyProblem {
                            file: files.get(&id).cloned().unwrap_or_default(),
                            policy_id: id,
                            message: format!(
                                "@{APPROVAL_ANNOTATION}({group:?}) names no group in {ENTITIES_FILE}"
                            ),
                        }],
                    });
                }
            }
            Some(_) => {
                return Err(PolicyError::Invalid {
                    problems: vec![PolicyProblem {
                        file: files.get(&id).cloned().unwrap_or_default(),
                        policy_id: id,
                        message: format!("@{APPROVAL_ANNOTATION} belongs on a forbid policy"),
                    }],
                });
            }
            None => approved
                .add(policy.clone())
                .map_err(|e| PolicyError::Parse {
                    path: files.get(&id).cloned().unwrap_or_default(),
                    message: e.to_string(),
                })?,
        }
    }
    Ok(approved)
}

fn problem(files: &BTreeMap<String, PathBuf>, id: &PolicyId, message: String) -> PolicyProblem {
    PolicyProblem {
        policy_id: id.to_string(),
        file: files.get(&id.to_string()).cloned().unwrap_or_default(),
        message,
    }
}

fn check_entities(path: &Path, entities: &Entities) -> Result<Vec<KnownUser>, PolicyError> {
    let mut users = Vec::new();
    for entity in entities.iter() {
        let uid = entity.uid();
        let kind = uid.type_name().to_string();
        let id = uid.id().unescaped();
        match kind.as_str() {
            "User" => {
                let id = UserId::parse(id).map_err(|source| PolicyError::EntityName {
                    path: path.to_path_buf(),
                    source,
                })?;
                let name = match entity.attr("name") {
                    Some(Ok(EvalResult::String(name))) => name,
                    _ => {
                        return Err(PolicyError::EntityNotAllowed {
                            path: path.to_path_buf(),
                            uid: uid.to_string(),
                            why: "a user needs a string `name`".to_owned(),
                        });
                    }
                };
                users.push(KnownUser { id, name });
            }
            "Group" => check_group_name(id).map_err(|source| PolicyError::EntityName {
                path: path.to_path_buf(),
                source,
            })?,
            // Cedar adds the schema's actions itself.
            "Action" => {}
            _ => {
                return Err(PolicyError::EntityNotAllowed {
                    path: path.to_path_buf(),
                    uid: uid.to_string(),
                    why: "the entities file holds only User and Group entities; services, \
                          points and namespaces come from the request"
                        .to_owned(),
                });
            }
        }
    }
    users.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(users)
}

fn digest(files: &[(String, Vec<u8>)]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, bytes) in files {
        context.update(&(name.len() as u64).to_be_bytes());
        context.update(name.as_bytes());
        context.update(&(bytes.len() as u64).to_be_bytes());
        context.update(bytes);
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
