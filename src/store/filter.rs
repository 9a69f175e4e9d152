//! A WHERE clause built from optional filters, with its values bound in order, for
//! the listing queries that must be one SQL on SQLite and PostgreSQL alike.

/// A value bound to a `$n` placeholder.
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

#[derive(Default)]
pub(crate) struct Where {
    conditions: Vec<String>,
    binds: Vec<Bind>,
}

impl Where {
    /// Adds a condition whose `?` marks take `values` in order.
    pub fn add(&mut self, sql: &str, values: Vec<Bind>) {
        let mut sql = sql.to_string();
        for value in values {
            self.binds.push(value);
            sql = sql.replacen('?', &format!("${}", self.binds.len()), 1);
        }
        self.conditions.push(sql);
    }

    /// The placeholder number after the condition values (for LIMIT and OFFSET).
    pub fn next_placeholder(&self) -> usize {
        self.binds.len() + 1
    }

    /// Empty, or `WHERE a AND b …`.
    pub fn clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }

    /// Binds the condition values to `query`, in order.
    pub fn bind<'q>(self, mut query: AnyQuery<'q>) -> AnyQuery<'q> {
        for value in self.binds {
            query = match value {
                Bind::Int(n) => query.bind(n),
                Bind::Text(t) => query.bind(t),
            };
        }
        query
    }
}

/// `text` with the LIKE wildcards and the escape character escaped (`ESCAPE '\'`).
pub(crate) fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_the_order_values_are_added() {
        let mut w = Where::default();
        assert_eq!(w.clause(), "");
        w.add("a = ?", vec![Bind::Int(1)]);
        w.add(
            "(b = ? OR c LIKE ?)",
            vec![Bind::Text("x".into()), Bind::Text("y".into())],
        );
        w.add("d = 0", vec![]);
        assert_eq!(
            w.clause(),
            "WHERE a = $1 AND (b = $2 OR c LIKE $3) AND d = 0"
        );
        assert_eq!(w.next_placeholder(), 4);
        assert_eq!(like_literal(r"a_b%c\d"), r"a\_b\%c\\d");
    }
}
