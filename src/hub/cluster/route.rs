//! Where an action goes in a cluster, and how many connections a room
//! message or broadcast reached: decided from ids and presence alone, so it
//! is tested without Redis.
//!
//! A connection id starts with the id of the instance that holds it, so an
//! action on one connection goes to that instance only; a room message or
//! broadcast goes to every instance, each delivering to its own members.

use super::super::local::ConnView;
use super::super::Applied;
use crate::action::{Action, Addressee};
use crate::id::ConnId;

/// Where an action is executed.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Its connection is here (or its id names no other instance, and it
    /// never moved away).
    Here,
    /// Its connection is elsewhere: on the instance Redis says holds it
    /// (`ws2http:moved`), else on the one its id names (its first 8 characters).
    To(ConnId),
    /// Room messages and broadcasts: here and on every other instance.
    Everywhere,
}

/// Where `action` goes from instance `me`; `is_here` says whether this
/// instance holds a connection (live, or with its close event pending),
/// `moved_away` whether a session this instance created left it.
pub fn route(
    action: &Action,
    me: &str,
    is_here: impl Fn(&ConnId) -> bool,
    moved_away: impl Fn(&ConnId) -> bool,
) -> Route {
    let target = match action.addressee() {
        Addressee::Conn(conn) => conn,
        Addressee::Room { .. } | Addressee::Endpoint(_) => return Route::Everywhere,
    };
    if is_here(target) {
        return Route::Here;
    }
    match target.instance() {
        Some(instance) if instance != me || moved_away(target) => Route::To(target.clone()),
        _ => Route::Here,
    }
}

/// Who a room message or broadcast is for, to count them in presence.
#[derive(Debug, PartialEq, Eq)]
pub enum Audience {
    Room { room: String, except: Option<ConnId> },
    Endpoint(Option<String>),
}

impl Audience {
    /// `None` for an action that is not a room message or broadcast.
    pub fn of(action: &Action) -> Option<Audience> {
        match action.addressee() {
            Addressee::Room { room, except } => Some(Audience::Room { room: room.into(), except: except.cloned() }),
            Addressee::Endpoint(endpoint) => Some(Audience::Endpoint(endpoint.map(str::to_owned))),
            Addressee::Conn(_) => None,
        }
    }

    fn includes(&self, v: &ConnView) -> bool {
        match self {
            Audience::Room { room, except } => {
                v.rooms.contains(room) && except.as_ref().is_none_or(|e| e.as_str() != v.id)
            }
            Audience::Endpoint(endpoint) => endpoint.as_ref().is_none_or(|e| *e == v.endpoint),
        }
    }
}

/// How many connections a published room message or broadcast reached:
/// those the hub delivered to here, plus the members in other instances'
/// presence (`others`). One that was not published (the queue for Redis was
/// full) reached only this instance's, and has no audience to count.
pub fn reached(here: Applied, audience: &Audience, others: &[ConnView]) -> Applied {
    match here {
        Applied::Reached(n) => Applied::Reached(n + others.iter().filter(|v| audience.includes(v)).count()),
        Applied::Refused => Applied::Refused,
    }
}

#[cfg(test)]
mod tests;
