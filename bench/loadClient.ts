/**
 * A load generator in its own process, so that the benchmark's process holds only the server and its
 * CPU time is the server's alone (bench/limits.ts). Reads a JSON job file named on the command line,
 * sends its body to its URL from `concurrency` clients back to back for `seconds`, checks every answer,
 * and prints one JSON line: how many requests were answered, in how many seconds.
 *
 *   node bench/loadClient.ts /tmp/job.json
 */
import { readFileSync } from "node:fs";
import { runLoad } from "./load.ts";

interface Job {
  url: string;
  body: string;
  seconds: number;
  concurrency: number;
  status: number;
  code?: string;
}

const job = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as Job;
const result = await runLoad(job.seconds, job.concurrency, async () => {
  const response = await fetch(job.url, { method: "POST", headers: { "content-type": "application/json" }, body: job.body });
  const text = await response.text();
  if (response.status !== job.status || (job.code && !text.includes(`"${job.code}"`))) {
    throw new Error(`expected ${job.status} ${job.code ?? ""}, got ${response.status}: ${text.slice(0, 200)}`);
  }
});
console.log(JSON.stringify({ requests: result.latencies.length, rps: result.rps }));
