//! What the scaled-out offense stage keeps in its local working copy beside the offenses:
//! the detections each consumed partition has applied ([`crate::cluster::wire::Marks`]), and
//! the offenses changed here but not yet written to ClickHouse. Both change in the same
//! transaction as the offenses, so a crash anywhere leaves them consistent with the offenses.

use rusqlite::params;

use super::{clamp_i64, Store, StoreError};
use crate::cluster::wire::Marks;

impl Store {
    /// The applied-detection marks of consumed partition `partition`.
    pub fn cluster_marks(&self, partition: i32) -> Result<Marks, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT origin, offset, n FROM cluster_marks WHERE partition = ?1")?;
        let rows = stmt.query_map(params![partition], |r| {
            Ok((
                r.get::<_, i32>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })?;
        let mut marks = Marks::default();
        for row in rows {
            let (origin, offset, n) = row?;
            marks.0.insert(origin, (offset, n));
        }
        Ok(marks)
    }

    /// Replaces the marks of consumed partition `partition`.
    pub fn set_cluster_marks(&self, partition: i32, marks: &Marks) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM cluster_marks WHERE partition = ?1")?
            .execute(params![partition])?;
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO cluster_marks (partition, origin, offset, n) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (origin, (offset, n)) in &marks.0 {
            insert.execute(params![partition, origin, offset, n])?;
        }
        Ok(())
    }

    /// Records that offense `id` changed here from stored event `first_event` on and is not
    /// in ClickHouse yet (keeps the lowest position if it was already waiting).
    pub fn note_unmirrored(&self, id: &str, first_event: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO unmirrored (offense_id, first_event) VALUES (?1, ?2)
                 ON CONFLICT (offense_id) DO UPDATE
                 SET first_event = min(first_event, excluded.first_event)",
            )?
            .execute(params![id, clamp_i64(first_event)])?;
        Ok(())
    }

    /// Offenses waiting to be written to ClickHouse, with their first unwritten event.
    pub fn unmirrored(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT offense_id, first_event FROM unmirrored ORDER BY offense_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, first) = row?;
            out.push((id, u64::try_from(first).unwrap_or(0)));
        }
        Ok(out)
    }

    /// Offenses now in ClickHouse.
    pub fn clear_unmirrored(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM unmirrored WHERE offense_id = ?1")?;
        for id in ids {
            stmt.execute(params![id])?;
        }
        Ok(())
    }

    /// Removes offenses from this working copy (with their rules, notes, stored events and
    /// pending writes): another node owned them meanwhile, ClickHouse has their current state.
    pub fn forget_offenses(&self, ids: &[String]) -> Result<(), StoreError> {
        for sql in [
            "DELETE FROM offense_events WHERE offense_id = ?1",
            "DELETE FROM offense_rules WHERE offense_id = ?1",
            "DELETE FROM offense_notes WHERE offense_id = ?1",
            "DELETE FROM unmirrored WHERE offense_id = ?1",
            "DELETE FROM offenses WHERE id = ?1",
        ] {
            let mut stmt = self.conn.prepare_cached(sql)?;
            for id in ids {
                stmt.execute(params![id])?;
            }
        }
        Ok(())
    }

    /// Ids and index values of the open offenses.
    pub fn open_offense_indexes(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, index_value FROM offenses WHERE status = 'open'")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_pending_writes_survive_in_the_working_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.in_transaction(|s| {
                let mut m = Marks::default();
                m.0.insert(2, (40, 1));
                m.0.insert(0, (7, 0));
                s.set_cluster_marks(3, &m)?;
                s.note_unmirrored("a", 5)?;
                s.note_unmirrored("a", 9)?;
                s.note_unmirrored("b", 0)
            })
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let m = s.cluster_marks(3).unwrap();
        assert_eq!(m.0.get(&2), Some(&(40, 1)));
        assert_eq!(m.0.get(&0), Some(&(7, 0)));
        assert!(s.cluster_marks(1).unwrap().0.is_empty());
        assert_eq!(
            s.unmirrored().unwrap(),
            vec![("a".to_owned(), 5), ("b".to_owned(), 0)]
        );
        s.clear_unmirrored(&["a".to_owned()]).unwrap();
        assert_eq!(s.unmirrored().unwrap(), vec![("b".to_owned(), 0)]);
    }
}
