//! Partner tokens are encrypted at rest, bound to their row, and rotate to a new key.

use model::{ProviderName, UserId};
use secrecy::{ExposeSecret, SecretString};
use store::audit::Actor;
use store::lifecycle::Connection;
use store::{KeyRing, Store, StoreError};
use tidegate_e2e::{TestDb, test_epoch, test_settings};

async fn store_with(db: &TestDb, keys: &SecretString) -> Store {
    let settings = test_settings(&db.url, &[("TIDEGATE_TOKEN_KEYS", keys.expose_secret())]);
    let store = tidegate::startup::store(&settings).unwrap();
    store.migrate().await.unwrap();
    store
}

async fn connect(store: &Store, user: &str, provider: &str, access: &str, refresh: &str) -> model::DataSourceId {
    let c = Connection {
        user: UserId::parse(user).unwrap(),
        provider: ProviderName::parse(provider).unwrap(),
        region: Some("us".into()),
        partner_account_id: format!("acct-{user}"),
        access_token: SecretString::from(access.to_owned()),
        refresh_token: Some(SecretString::from(refresh.to_owned())),
        access_expires_at: Some(test_epoch()),
        scope: Some("offline_access".into()),
        link_token_hash: None,
        first_poll_at: test_epoch(),
    };
    let actor = Actor { sub: user.to_owned(), role: "patient".into() };
    store.connect(&actor, &c, test_epoch()).await.unwrap().id
}

#[tokio::test]
async fn tokens_are_ciphertext_in_the_database_and_in_a_dump() {
    let db = TestDb::create().await;
    let keys = KeyRing::generate_entry("k1");
    let store = store_with(&db, &keys).await;
    let id = connect(&store, "0123456789", "dexcom", "ACCESS-e1f2a3b4c5d6", "REFRESH-0a9b8c7d6e5f").await;
    let session = store.get_provider_session(&id).await.unwrap().unwrap();
    assert_eq!(session.access_token.expose_secret(), "ACCESS-e1f2a3b4c5d6");
    assert_eq!(session.refresh_token.as_ref().unwrap().expose_secret(), "REFRESH-0a9b8c7d6e5f");
    assert!(!format!("{session:?}").contains("ACCESS-e1f2"), "Debug must not show tokens");

    let dump = std::env::temp_dir().join(format!("{}.sql", db.name));
    db.dump(&dump).unwrap();
    let text = std::fs::read_to_string(&dump).unwrap();
    std::fs::remove_file(&dump).ok();
    assert!(text.contains("provider_sessions"), "the dump has the table");
    for secret in ["ACCESS-e1f2a3b4c5d6", "REFRESH-0a9b8c7d6e5f"] {
        assert!(!text.contains(secret), "{secret} found in pg_dump");
    }
}

#[tokio::test]
async fn tampered_or_moved_ciphertexts_do_not_decrypt() {
    let db = TestDb::create().await;
    let store = store_with(&db, &KeyRing::generate_entry("k1")).await;
    let a = connect(&store, "0123456789", "dexcom", "access-a", "refresh-a").await;
    let b = connect(&store, "abcdef0123", "dexcom", "access-b", "refresh-b").await;

    // Flip one bit of a's access token.
    sqlx::query("UPDATE provider_sessions SET access_token = set_byte(access_token, 20, get_byte(access_token, 20) # 1) WHERE data_source_id = $1")
        .bind(a.as_str())
        .execute(&db.sql())
        .await
        .unwrap();
    let err = store.get_provider_session(&a).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(store::CryptoError::Unauthentic)), "{err:?}");

    // Copy b's (intact) ciphertexts onto a's row: bound to b's row, they do not open on a's.
    sqlx::query(
        "UPDATE provider_sessions AS dst SET access_token = src.access_token, refresh_token = src.refresh_token
         FROM provider_sessions AS src WHERE dst.data_source_id = $1 AND src.data_source_id = $2",
    )
    .bind(a.as_str())
    .bind(b.as_str())
    .execute(&db.sql())
    .await
    .unwrap();
    let err = store.get_provider_session(&a).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(store::CryptoError::Unauthentic)), "{err:?}");
    // b is untouched.
    assert_eq!(store.get_provider_session(&b).await.unwrap().unwrap().access_token.expose_secret(), "access-b");
}

#[tokio::test]
async fn keys_rotate_reencrypts_everything_so_the_old_key_can_go() {
    let db = TestDb::create().await;
    let old = KeyRing::generate_entry("old");
    let new = KeyRing::generate_entry("new");
    let store = store_with(&db, &old).await;
    let mut ids = Vec::new();
    for i in 0..7u32 {
        let user = format!("{:010x}", 0x1000 + i);
        ids.push(connect(&store, &user, "dexcom", &format!("access-{i}"), &format!("refresh-{i}")).await);
    }
    // Deploy the ring with the new key first, the old one still present; rotate.
    let both = SecretString::from(format!("{},{}", new.expose_secret(), old.expose_secret()));
    let rotating = store_with(&db, &both).await;
    let n = tidegate::keys::rotate(&rotating).await.unwrap();
    assert_eq!(n, 7);
    assert_eq!(tidegate::keys::rotate(&rotating).await.unwrap(), 0, "a second run has nothing to do");
    let key_ids: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT key_id FROM provider_sessions").fetch_all(&db.sql()).await.unwrap();
    assert_eq!(key_ids, vec!["new".to_owned()]);
    // Retire the old key: everything still decrypts.
    let only_new = store_with(&db, &new).await;
    for (i, id) in ids.iter().enumerate() {
        let s = only_new.get_provider_session(id).await.unwrap().unwrap();
        assert_eq!(s.access_token.expose_secret(), format!("access-{i}"));
        assert_eq!(s.refresh_token.unwrap().expose_secret(), format!("refresh-{i}"));
    }
    // And the old ring alone no longer can.
    let err = store.get_provider_session(&ids[0]).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(store::CryptoError::UnknownKey(_))), "{err:?}");
}
