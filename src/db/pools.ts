/** Connection pools. Pool errors (e.g. the server restarting) are logged, never fatal. */
import pg from "pg";

export function makePool(connectionString: string, max: number, name: string): pg.Pool {
  const pool = new pg.Pool({ connectionString, max, connectionTimeoutMillis: 10_000 });
  pool.on("error", (error) => {
    console.error(`[${name} pool] idle client error: ${error.message}`);
  });
  pool.on("connect", (client) => {
    client.on("error", (error) => console.error(`[${name} pool] client error: ${error.message}`));
  });
  return pool;
}
