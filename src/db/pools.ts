/** Connection pools. Pool errors (e.g. the server restarting) are logged, never fatal. */
import pg from "pg";

/** connectTimeoutMs 0 waits for a free client as long as it takes (tests that queue many queries). */
export function makePool(connectionString: string, max: number, name: string, connectTimeoutMs = 10_000): pg.Pool {
  const pool = new pg.Pool({ connectionString, max, connectionTimeoutMillis: connectTimeoutMs });
  pool.on("error", (error) => {
    console.error(`[${name} pool] idle client error: ${error.message}`);
  });
  pool.on("connect", (client) => {
    client.on("error", (error) => console.error(`[${name} pool] client error: ${error.message}`));
  });
  return pool;
}
