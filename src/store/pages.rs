//! Keyset pagination of the lists that grow without bound (an
//! organization's secrets and its audit trail), newest first.
//!
//! A page ends at a [`Cursor`]: the creation time and id of its last row.
//! The next page is everything strictly older in `(created_at, id)` order,
//! which is total even where two rows share a time, and which rows added
//! meanwhile (always newer) cannot shift. The API wraps a cursor in an
//! opaque token bound to the organization and the list (`crate::grpc`).

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect, Select,
};
use uuid::Uuid;

/// Where a page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// Which rows to read: at most `size`, after `after` (from the newest when
/// `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub size: u64,
    pub after: Option<Cursor>,
}

/// Rows of one page, and where the next one starts (`None` on the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// Orders `select` newest first, starts it after `page.after`, and reads one
/// row more than the page holds, so that [`paged`] can tell whether another
/// page follows.
pub(super) fn newest_first<E: EntityTrait>(
    select: Select<E>,
    created_at: E::Column,
    id: E::Column,
    page: Page,
) -> Select<E> {
    let select = match page.after {
        Some(cursor) => select.filter(
            Condition::any().add(created_at.lt(cursor.created_at)).add(
                Condition::all()
                    .add(created_at.eq(cursor.created_at))
                    .add(id.lt(cursor.id)),
            ),
        ),
        None => select,
    };
    select
        .order_by(created_at, Order::Desc)
        .order_by(id, Order::Desc)
        .limit(page.size + 1)
}

/// The page of `rows` (read by [`newest_first`]), and the cursor of the
/// next page if there is one.
pub(super) fn paged<T>(mut rows: Vec<T>, page: Page, cursor: impl Fn(&T) -> Cursor) -> Paged<T> {
    let more = rows.len() as u64 > page.size;
    rows.truncate(page.size as usize);
    let next = if more { rows.last().map(cursor) } else { None };
    Paged { items: rows, next }
}
