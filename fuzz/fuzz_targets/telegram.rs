//! Telegram: one update of `getUpdates` (`map_update`), with the group setting
//! and text inclusion picked by the first byte.
//!
//! Invariants: mapping is deterministic; a kept event is accepted by the
//! pipeline; a rejected update goes to the DLQ with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socialcrm_connectors::telegram::mapping::{map_update, Ctx, Mapped};
use socialcrm_connectors::telegram::GroupMessages;
use socialcrm_fuzz::{assert_connector_event, assert_connector_rejected, json, now};

const INSTANCE: &str = "telegram";

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some(update) = json(rest) else {
        return;
    };
    let ctx = Ctx {
        bot_id: "7000",
        bot_username: Some("brand_bot"),
        group_messages: match sel % 3 {
            0 => GroupMessages::Mentions,
            1 => GroupMessages::All,
            _ => GroupMessages::None,
        },
        include_text: sel & 0x80 != 0,
        received_at: now(),
    };
    match map_update(&update, &ctx) {
        Mapped::Event(ev) => {
            match map_update(&update, &ctx) {
                Mapped::Event(again) => assert_eq!(again.event_id, ev.event_id),
                other => panic!("not deterministic: {other:?}"),
            }
            assert_connector_event(&ev, INSTANCE);
        }
        Mapped::Skipped(s) => assert!(!s.as_str().is_empty()),
        Mapped::Rejected(r) => assert_connector_rejected(&r, INSTANCE),
    }
});
