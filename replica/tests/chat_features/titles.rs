//! Titles: generated once after the first message, off the turn's path, by
//! the title model or the chat's own; on the chat's and the owner's
//! streams; never over a title the user set, even when racing it.

use chatd_shared::{
    api::{UpdateChat, UpdateModelConfig, WatchEvent, WatchKind},
    client::Transport,
    stream::StreamEvent,
};
use futures::StreamExt;
use serde_json::json;

use super::{
    common::{
        WAIT, Wire,
        app::{idle_chat, open_stream, read_until, say},
    },
    fixture::{ModelSpec, Setup, add_model, create, send, wait_idle, wait_metric},
};

async fn a_title_appears_on_the_chat_and_owner_streams(wire: Wire) {
    let setup = Setup::start(2, wire, ModelSpec::default(), |_, _| {}).await;
    let (_, token) = setup.app.user("ada").await;
    // Streams on the replica that does not necessarily run the chat.
    let ada = setup.app.client(1, &token);
    let mut watch = ada.watch(Transport::WebSocket).await.unwrap();
    let chat = idle_chat(&ada).await;
    let mut stream = open_stream(&ada, chat, Transport::Sse).await;
    send(
        &ada,
        chat,
        &say(json!({"text": "Hi there", "title": "\"Greeting the user.\""})),
    )
    .await;
    let events = read_until(&mut stream, |e| matches!(e, StreamEvent::Title { .. })).await;
    let Some(StreamEvent::Title { title, .. }) = events.last() else {
        unreachable!("read until a title");
    };
    assert_eq!(
        title, "Greeting the user",
        "cleaned of quotes and the period"
    );
    let title_event = chatd_shared::testing::wait_for("a title on the watch stream", WAIT, async {
        while let Some(event) = watch.next().await {
            if let Ok(WatchEvent::Chat {
                kind: WatchKind::Title,
                chat: listed,
            }) = event
                && listed.id == chat
            {
                return listed;
            }
        }
        panic!("the watch stream ended");
    })
    .await;
    assert_eq!(title_event.title, "Greeting the user");
    // The title request was not streamed and offered no tools.
    let titles: Vec<_> = setup
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.body.as_ref().is_some_and(|b| b["stream"] != json!(true)))
        .collect();
    assert_eq!(titles.len(), 1, "one title request");
    assert!(titles[0].body.as_ref().unwrap().get("tools").is_none());
    setup.shutdown().await;
}

#[tokio::test]
async fn a_title_appears_on_the_chat_and_owner_streams_over_openai() {
    a_title_appears_on_the_chat_and_owner_streams(Wire::OpenAi).await;
}

#[tokio::test]
async fn a_title_appears_on_the_chat_and_owner_streams_over_anthropic() {
    a_title_appears_on_the_chat_and_owner_streams(Wire::Anthropic).await;
}

#[tokio::test]
async fn a_slow_title_never_delays_the_reply_nor_overwrites_the_users_title() {
    // Replica 0 runs the turn and the title call; the user renames the chat
    // through replica 1, which runs nothing.
    let setup = Setup::start(2, Wire::OpenAi, ModelSpec::default(), |index, config| {
        if index == 1 {
            config.runtime.max_running_chats = 0;
        }
    })
    .await;
    let client = setup.app.admin(0);
    let other = setup.app.admin(1);
    // The title model takes 4 s; the reply is immediate.
    let chat = create(
        &client,
        &say(json!({"text": "ok", "title": "Generated title", "title_delay_ms": 4000})),
        None,
    )
    .await;
    wait_idle(&client, chat, 2).await;
    assert_eq!(
        client.get_chat(chat).await.unwrap().title,
        "",
        "the reply came first"
    );
    // The user names the chat while the generator is still waiting.
    other
        .update_chat(
            chat,
            &UpdateChat {
                title: Some("Mine".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_metric(&setup.app, 0, "chatd_titles_total", 1.0).await;
    let metrics = setup.app.metrics(0).await;
    assert!(
        metrics.contains(r#"chatd_titles_total{outcome="user_title""#),
        "{metrics}"
    );
    assert_eq!(client.get_chat(chat).await.unwrap().title, "Mine");
    // Later turns never make one.
    send(
        &client,
        chat,
        &say(json!({"text": "again", "title": "Other"})),
    )
    .await;
    wait_idle(&client, chat, 4).await;
    assert_eq!(client.get_chat(chat).await.unwrap().title, "Mine");
    assert_eq!(
        chatd_shared::testing::metric_sum(&setup.app.metrics(0).await, "chatd_titles_total"),
        1.0
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn a_failing_title_model_leaves_no_title_and_is_counted() {
    let setup = Setup::start(1, Wire::Anthropic, ModelSpec::default(), |_, _| {}).await;
    let client = setup.app.admin(0);
    let chat = create(
        &client,
        &say(json!({"text": "fine", "title_error": 500})),
        None,
    )
    .await;
    assert_eq!(wait_idle(&client, chat, 2).await.to_string(), "waiting");
    wait_metric(&setup.app, 0, "chatd_titles_total", 1.0).await;
    assert!(
        setup
            .app
            .metrics(0)
            .await
            .contains(r#"chatd_titles_total{outcome="failed""#)
    );
    assert_eq!(client.get_chat(chat).await.unwrap().title, "");
    setup.shutdown().await;
}

#[tokio::test]
async fn the_model_flagged_for_titles_writes_them() {
    let setup = Setup::start(1, Wire::OpenAi, ModelSpec::default(), |_, _| {}).await;
    let cheap = add_model(
        &setup.app,
        &setup.mock,
        Wire::OpenAi,
        "cheap-model",
        ModelSpec::default(),
    )
    .await;
    let client = setup.app.admin(0);
    // Through the admin API, which tells every replica's model catalog.
    let flagged = client
        .update_model_config(
            cheap,
            &UpdateModelConfig {
                use_for_titles: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(flagged.use_for_titles);
    let chat = create(
        &client,
        &say(json!({"text": "hi", "title": "Cheap title"})),
        None,
    )
    .await;
    wait_idle(&client, chat, 2).await;
    wait_metric(&setup.app, 0, "chatd_titles_total", 1.0).await;
    assert_eq!(client.get_chat(chat).await.unwrap().title, "Cheap title");
    let models: Vec<(String, bool)> = setup
        .mock
        .requests()
        .iter()
        .filter_map(|r| r.body.as_ref())
        .map(|b| {
            (
                b["model"].as_str().unwrap_or("").to_owned(),
                b["stream"] == json!(true),
            )
        })
        .collect();
    assert!(
        models.contains(&("cheap-model".into(), false)),
        "{models:?}"
    );
    assert!(models.contains(&("mock-model".into(), true)), "{models:?}");
    setup.shutdown().await;
}
