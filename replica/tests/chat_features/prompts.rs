//! System prompts: the deployment's, the user's and the chat's reach the
//! model in that order, in each wire format's system slot, and a change
//! made on one replica is seen by a run on another.

use chatd_mockllm::RecordedRequest;
use serde_json::{Value, json};

use super::{
    common::{Wire, app::say},
    fixture::{ModelSpec, Setup, create, described, send, wait_idle},
};

/// The system text the model received in a streamed (reply) request.
fn system_slot(wire: Wire, request: &RecordedRequest) -> Value {
    let body = request.body.as_ref().expect("a JSON body");
    match wire {
        Wire::OpenAi => {
            assert_eq!(body["messages"][0]["role"], "system", "{body}");
            body["messages"][0]["content"].clone()
        }
        Wire::Anthropic => body["system"].clone(),
    }
}

/// The reply requests the mock received (titles are not streamed).
fn reply_requests(setup: &Setup) -> Vec<RecordedRequest> {
    setup
        .mock
        .requests()
        .into_iter()
        .filter(|request| {
            request
                .body
                .as_ref()
                .is_some_and(|body| body["stream"] == json!(true))
        })
        .collect()
}

async fn the_three_prompts_reach_the_model_in_order(wire: Wire) {
    // Replica 0 only serves the API; replica 1 runs every turn.
    let setup = Setup::start(2, wire, ModelSpec::default(), |index, config| {
        if index == 0 {
            config.runtime.max_running_chats = 0;
        }
    })
    .await;
    let admin = setup.app.admin(0);
    admin.set_system_prompt("Deployment rules.").await.unwrap();
    let (_, token) = setup.app.user("ada").await;
    let ada = setup.app.client(0, &token);
    ada.set_my_prompt("Call me Ada.").await.unwrap();
    assert_eq!(ada.my_prompt().await.unwrap().custom_prompt, "Call me Ada.");

    let describe = say(json!({"describe": true}));
    let chat = create(&ada, &describe, Some("Be brief in this chat.")).await;
    wait_idle(&ada, chat, 2).await;
    let expected = "Deployment rules.\n\nCall me Ada.\n\nBe brief in this chat.";
    assert_eq!(described(&ada, chat).await["system"], expected);
    let requests = reply_requests(&setup);
    assert_eq!(system_slot(wire, &requests[0]), expected);

    // Replica 1 has the deployment's prompt cached now; a change through
    // replica 0 reaches its next run.
    admin.set_system_prompt("New rules.").await.unwrap();
    ada.set_my_prompt("").await.unwrap();
    send(&ada, chat, &describe).await;
    wait_idle(&ada, chat, 4).await;
    assert_eq!(
        described(&ada, chat).await["system"],
        "New rules.\n\nBe brief in this chat."
    );
    assert_eq!(
        admin.system_prompt().await.unwrap().system_prompt,
        "New rules."
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn the_three_prompts_reach_the_model_in_order_over_openai() {
    the_three_prompts_reach_the_model_in_order(Wire::OpenAi).await;
}

#[tokio::test]
async fn the_three_prompts_reach_the_model_in_order_over_anthropic() {
    the_three_prompts_reach_the_model_in_order(Wire::Anthropic).await;
}
