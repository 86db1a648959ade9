//! The throwaway server comes up, keeps committed data through a clean and a crash restart, and
//! answers again after each.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tidegate_testkit::{Cluster, Restart};

#[tokio::test]
async fn a_restarted_cluster_keeps_committed_data_and_answers_again() {
    let cluster = Cluster::start();
    let mut conn = PgConnection::connect(&cluster.url()).await.expect("connect");
    sqlx::raw_sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)").execute(&mut conn).await.unwrap();
    for how in [Restart::Fast, Restart::Immediate] {
        cluster.restart(how);
        // The old session is gone; a new one sees the row.
        assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err(), "{how:?}: old session survived");
        conn = PgConnection::connect(&cluster.url()).await.expect("reconnect");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&mut conn).await.unwrap();
        assert_eq!(n, 1, "{how:?}");
    }
}
