/**
 * A fake ServiceTitan for tests: two node:http servers on 127.0.0.1 (random ports, shared memory),
 * one for the OAuth token endpoint and one for the API, so a client that mixes them up fails.
 *
 * Point the client at it with `{ authBaseUrl: fake.authUrl, apiBaseUrl: fake.apiUrl }`. It speaks:
 *   - POST /connect/token: form grant_type=client_credentials, client_id, client_secret; a wrong
 *     client answers 400 {"error":"invalid_client"}; tokens expire after tokenTtlSeconds.
 *   - GET /{crm|jpm|settings|dispatch}/v2/tenant/{tenant}/export/{resource}?from=&includeRecentChanges=
 *     Ordered by modifiedOn then id, inactive rows included; `from` is an opaque continuation
 *     token holding the (modifiedOn, id) of the last row returned (or a date: modifiedOn >= date),
 *     so rows added or modified after a token was handed out come after it; without
 *     includeRecentChanges, changes younger than 15 minutes are held back, as ServiceTitan
 *     documents. The appointment-assignments export also takes `active` (True | Any | False) and,
 *     like ServiceTitan's, returns only active rows unless asked for more.
 *   - GET /{module}/v2/tenant/{tenant}/{resource}?page=&pageSize=&includeTotal=&modifiedOnOrAfter=&active=
 *     Ordered by id; pageSize over 5000 and unreadable dates answer 400; active defaults to True.
 * API requests need `Authorization: Bearer <live token>` and `ST-App-Key` (401 otherwise) and the
 * tenant of the credentials in the path (403 otherwise). Errors are RFC 7807 objects like
 * ServiceTitan's {type, title, status, traceId, errors, data}.
 *
 * Records (locations, jobs, appointments, technicians, appointment-assignments) are generated from
 * a seed with the fields of ServiceTitan's v2 export models; ids are numbers, dates ISO 8601 UTC.
 * Jobs point at real locations and customers, appointments at real jobs. Appointments carry no
 * technician ids: as in ServiceTitan, the Dispatch API's appointment assignments link them to
 * real technicians (one per appointment, a second on about one in five). Tests change the data
 * with modify, deactivate, add and remove (a hard delete: gone from export and list answers).
 * The store keeps each resource sorted by id and by (modifiedOn, id), so a page is a binary
 * search and a slice: 100,000 jobs are generated in well under a second and served in pages of
 * up to 5000.
 *
 * Fault injection for API requests (not the token endpoint): `failNext(n, kind)` answers the next
 * n authorised API requests with a 429 (Retry-After when given), a 500, no answer at all until the
 * client gives up ("timeout"), or a 200 with a truncated JSON body ("malformed"). A request refused
 * for its token (401) comes first and uses no fault, so every fault queued is really served; the
 * request log says which request got which.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type FakeStResource = "locations" | "jobs" | "appointments" | "technicians" | "appointment-assignments";
export type FakeStFault = "429" | "500" | "timeout" | "malformed";
export type FakeStRecord = Record<string, unknown> & { id: number; active: boolean; createdOn: string; modifiedOn: string };
/** A record for `add`: every field of the resource; id, active, createdOn and modifiedOn may be left out. */
export type FakeStNewRecord = Record<string, unknown> & { id?: number; active?: boolean; createdOn?: string; modifiedOn?: string };

export interface FakeStRequest {
  /** Arrival time, ms since the epoch. */
  at: number;
  server: "auth" | "api";
  method: string;
  /** Path without the query. */
  path: string;
  query: Record<string, string>;
  /** The status answered; null while held open or when never answered (timeout fault). */
  status: number | null;
  /** The injected fault this request was answered with, if any. */
  fault?: FakeStFault;
}

export interface FakeServiceTitanOptions {
  clientId: string;
  clientSecret: string;
  appKey: string;
  tenantId: string;
  /**
   * Records per resource; defaults: 25 locations, 40 jobs, 60 appointments, 8 technicians, and
   * one assignment per appointment plus a second technician on about one appointment in five
   * (none without technicians).
   */
  counts?: Partial<Record<FakeStResource, number>>;
  /** Records per export page, 1 to 5000; default 500. */
  exportPageSize?: number;
  /** Lifetime of issued tokens; default 900 (ServiceTitan's). */
  tokenTtlSeconds?: number;
  /** Seed of the generated data; default 1. */
  seed?: number;
}

export interface FakeServiceTitan {
  /** Origin of the token endpoint, e.g. http://127.0.0.1:40123 */
  readonly authUrl: string;
  /** Origin of the API. */
  readonly apiUrl: string;
  /** Every request to either server, in arrival order. */
  readonly requests: FakeStRequest[];
  /** Copies of the stored records of a resource, by id. */
  records(resource: FakeStResource): FakeStRecord[];
  /** Applies `patch` and bumps modifiedOn to now (later than any other record). */
  modify(resource: FakeStResource, id: number, patch?: Record<string, unknown>): FakeStRecord;
  /** Sets active=false and bumps modifiedOn. */
  deactivate(resource: FakeStResource, id: number): FakeStRecord;
  /**
   * Stores a new record and returns a copy. `id` defaults to the next id never used by the
   * resource, `active` to true, `modifiedOn` to now (later than any other record, like modify)
   * and `createdOn` to now (never after modifiedOn). Other records are left alone (adding an
   * appointment changes no job). An explicit modifiedOn before a handed-out continuation token
   * puts the record behind that token, as it would in ServiceTitan.
   */
  add(resource: FakeStResource, record: FakeStNewRecord): FakeStRecord;
  /** Deletes a record outright (no deactivation, no bump): later export and list answers lack it. Returns it. */
  remove(resource: FakeStResource, id: number): FakeStRecord;
  /** The next `count` API requests fail this way. */
  failNext(count: number, kind: FakeStFault, retryAfterSeconds?: number): void;
  /** Every token issued so far stops working (a token expiring mid-sync). */
  expireTokensNow(): void;
  /** How many token requests arrived (successful or not). */
  tokenRequests(): number;
  close(): Promise<void>;
}

const MAX_PAGE_SIZE = 5000;
const RECENT_CHANGES_DELAY_MS = 15 * 60 * 1000;
const RESOURCES: readonly FakeStResource[] = ["locations", "jobs", "appointments", "technicians", "appointment-assignments"];
const MODULES: Record<FakeStResource, string> = {
  locations: "crm",
  jobs: "jpm",
  appointments: "jpm",
  technicians: "settings",
  "appointment-assignments": "dispatch",
};
const ID_BASE: Record<FakeStResource, number> = {
  locations: 51_000_000,
  jobs: 72_000_000,
  appointments: 73_000_000,
  technicians: 4_100_000,
  "appointment-assignments": 76_000_000,
};
/** Resources whose export feed takes `active` (True by default), per ServiceTitan's OpenAPI models. */
const EXPORT_ACTIVE_FILTER: ReadonlySet<FakeStResource> = new Set(["appointment-assignments"]);

// ---------------------------------------------------------------------------------------------
// Deterministic data

/** mulberry32: a small seeded PRNG, good enough for test data. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CITIES = [
  { city: "Phoenix", state: "AZ", zip: "850", lat: 33.4484, lon: -112.074 },
  { city: "Glendale", state: "CA", zip: "912", lat: 34.1425, lon: -118.2551 },
  { city: "Austin", state: "TX", zip: "787", lat: 30.2672, lon: -97.7431 },
  { city: "Denver", state: "CO", zip: "802", lat: 39.7392, lon: -104.9903 },
  { city: "Tampa", state: "FL", zip: "336", lat: 27.9506, lon: -82.4572 },
  { city: "Columbus", state: "OH", zip: "432", lat: 39.9612, lon: -82.9988 },
];
const STREETS = ["Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Brand Blvd", "Elm St", "Sunset Rd", "Lakeview Ct"];
const FIRST_NAMES = ["Maria", "James", "Aisha", "Carlos", "Emily", "Daniel", "Priya", "Marcus", "Olivia", "Tom"];
const LAST_NAMES = ["Garcia", "Smith", "Johnson", "Nguyen", "Brown", "Patel", "Lee", "Walker", "Lopez", "Kim"];
const JOB_SUMMARIES = [
  "No hot water, water heater leaking at the base",
  "AC not cooling, thermostat shows 84F",
  "Kitchen sink clogged, slow drain for a week",
  "Annual furnace tune-up (membership visit)",
  "Breaker keeps tripping in the garage",
  "Install new 50 gal water heater",
];
const SKILLS = [
  { id: 301, name: "HVAC Service" },
  { id: 302, name: "Plumbing Service" },
  { id: 303, name: "Electrical" },
  { id: 304, name: "Install" },
  { id: 305, name: "EPA 608 Certified" },
];
const TEAMS = ["Red Team", "Blue Team", "Install Crew"];

/** Creation dates spread over 2024-2025, modifications up to 120 days later (all in the past). */
const EPOCH_START = Date.UTC(2024, 0, 1);
const EPOCH_END = Date.UTC(2025, 11, 31);
const EPOCH_SPAN = EPOCH_END - EPOCH_START - 120 * 86_400_000;
const DAY_MS = 86_400_000;

const isoDates = new Map<number, string>(); // day number -> "2024-01-31T"
const isoClocks = new Map<number, string>(); // ms into the day -> "07:30:00.000Z"

/**
 * Date#toISOString of milliseconds since the epoch. Whole seconds (all generated data) are put
 * together from cached day and time-of-day strings: 300,000 toISOString calls were most of the
 * time it took to generate 100,000 jobs.
 */
function iso(ms: number): string {
  // Outside years 1970-9999 the date part is not 11 characters ("+010000-01-01T"): no cache.
  if (ms % 1000 !== 0 || ms < 0 || ms >= 253_402_300_800_000) return new Date(ms).toISOString();
  const time = ms % DAY_MS;
  const day = (ms - time) / DAY_MS;
  let date = isoDates.get(day);
  if (date === undefined) {
    date = new Date(ms - time).toISOString().slice(0, 11);
    isoDates.set(day, date);
  }
  let clock = isoClocks.get(time);
  if (clock === undefined) {
    clock = new Date(time).toISOString().slice(11);
    isoClocks.set(time, clock);
  }
  return date + clock;
}
/** The one empty array every generated record shares (frozen; there are a lot of records). */
const NONE: readonly never[] = Object.freeze([]);

/** How many records to generate; null assignments: one per appointment, a second on about one in five. */
type GenerateCounts = Record<Exclude<FakeStResource, "appointment-assignments">, number> & { "appointment-assignments": number | null };

/** Generated records of each resource and, index for index, their modifiedOn in ms. */
type Generated = Record<FakeStResource, { records: FakeStRecord[]; modified: number[] }>;

function generate(counts: GenerateCounts, seed: number): Generated {
  const random = prng(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T;
  const int = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  /** A random duration below `ms`, in whole seconds: every generated time is a whole second. */
  const upTo = (ms: number) => Math.floor(random() * Math.floor(ms / 1000)) * 1000;
  const modifiedOf: Record<FakeStResource, number[]> = {
    locations: [],
    jobs: [],
    appointments: [],
    technicians: [],
    "appointment-assignments": [],
  };
  /** Creation and modification times of the next record of `resource`; keeps modified as a number for the store. */
  const stamps = (resource: FakeStResource) => {
    const created = EPOCH_START + upTo(EPOCH_SPAN);
    const modified = created + upTo(120 * DAY_MS);
    modifiedOf[resource].push(modified);
    return { createdOn: iso(created), modifiedOn: iso(modified), created };
  };
  /** Roughly one in six records is inactive; index 2 always is, so small sets have one. */
  const activeAt = (index: number) => index !== 2 && random() > 0.15;
  const address = () => {
    const place = pick(CITIES);
    return {
      street: `${int(100, 9899)} ${pick(STREETS)}`,
      unit: random() < 0.2 ? `Apt ${int(1, 40)}` : null,
      city: place.city,
      state: place.state,
      zip: `${place.zip}${String(int(0, 99)).padStart(2, "0")}`,
      country: "USA",
      latitude: Number((place.lat + (random() - 0.5) / 10).toFixed(6)),
      longitude: Number((place.lon + (random() - 0.5) / 10).toFixed(6)),
    };
  };

  const technicians: FakeStRecord[] = [];
  for (let i = 0; i < counts.technicians; i++) {
    const id = ID_BASE.technicians + i * 3 + 1;
    const firstName = pick(FIRST_NAMES);
    const lastName = pick(LAST_NAMES);
    const home = address();
    const { createdOn, modifiedOn } = stamps("technicians");
    const zoneIds = [int(11, 14), int(15, 19)];
    technicians.push({
      id,
      userId: id + 500_000,
      name: `${firstName} ${lastName}`,
      roleIds: [int(1, 4)],
      businessUnitId: pick([1101, 1102, 1103]),
      mainZoneId: zoneIds[0],
      zoneIds,
      createdOn,
      modifiedOn,
      email: `${firstName}.${lastName}${i}@example-hvac.com`.toLowerCase(),
      phoneNumber: `+1602555${String(1000 + i).slice(-4)}`,
      loginName: `${firstName[0]}${lastName}${i}`.toLowerCase(),
      home: { ...home, streetAddress: home.street },
      dailyGoal: int(8, 30) * 100,
      isManagedTech: true,
      licenseType: "ManagedTech",
      customFields: NONE,
      active: activeAt(i),
      aadUserId: null,
      burdenRate: 0,
      team: pick(TEAMS),
      jobFilter: "AllScheduledDispatchedWorking",
      permissions: NONE,
      accountLocked: false,
      commissionRate: 0,
      currentValue: null,
      firstName,
      lastName,
      hourlyRate: int(22, 48),
      jobId: null,
      mobilePhone: `+1480555${String(2000 + i).slice(-4)}`,
      outboundCallerId: null,
      payrollId: `P${1000 + i}`,
      payrollProfileId: null,
      appoitmentId: null, // sic: ServiceTitan's field name
      shiftStart: null,
      shiftEnd: null,
      soldByRate: 0,
      startDate: createdOn,
      status: pick(["Idle", "Dispatched", "Working", "Meal"]),
      skills: [pick(SKILLS), pick(SKILLS)].filter((s, k, all) => all.findIndex((x) => x.id === s.id) === k),
      positions: [pick(["Service", "Installer", "Maintenance"])],
      location: null,
      bio: null,
      memo: null,
    });
  }

  const locations: FakeStRecord[] = [];
  for (let i = 0; i < counts.locations; i++) {
    const id = ID_BASE.locations + i * 7 + 3;
    const { createdOn, modifiedOn } = stamps("locations");
    const customerId = 50_000_000 + i * 5 + 2;
    const place = address();
    locations.push({
      taxZoneId: random() < 0.8 ? int(61, 64) : null,
      id,
      customerId,
      active: activeAt(i),
      name: random() < 0.7 ? `${pick(FIRST_NAMES)} ${pick(LAST_NAMES)}` : `${place.street} (rental)`,
      address: place,
      customFields: NONE,
      createdOn,
      createdById: int(1, 40),
      modifiedOn,
      mergedToId: null,
      externalData: null,
    });
  }

  const jobs: FakeStRecord[] = [];
  for (let i = 0; i < counts.jobs; i++) {
    const id = ID_BASE.jobs + i * 11 + 5;
    const location = locations.length > 0 ? pick(locations) : null;
    const { createdOn, modifiedOn, created } = stamps("jobs");
    const jobStatus = pick(["Scheduled", "Dispatched", "InProgress", "Hold", "Completed", "Completed", "Canceled"]);
    jobs.push({
      summary: pick(JOB_SUMMARIES),
      customFields: NONE,
      externalData: NONE,
      summaryOfWork: null,
      id,
      jobNumber: String(id),
      projectId: null,
      customerId: location?.customerId ?? 0,
      locationId: location?.id ?? 0,
      jobStatus,
      completedOn: jobStatus === "Completed" ? iso(created + int(1, 10) * 86_400_000) : null,
      businessUnitId: pick([1101, 1102, 1103]),
      jobTypeId: pick([2201, 2202, 2203, 2204]),
      priority: pick(["Low", "Normal", "Normal", "High", "Urgent"]),
      campaignId: pick([3301, 3302, 3303]),
      appointmentCount: 0,
      firstAppointmentId: 0,
      lastAppointmentId: 0,
      recallForId: null,
      warrantyId: null,
      jobGeneratedLeadSource: null,
      noCharge: false,
      notificationsEnabled: true,
      createdOn,
      createdById: int(1, 40),
      modifiedOn,
      tagTypeIds: random() < 0.3 ? [int(401, 409)] : NONE,
      leadCallId: random() < 0.5 ? int(90_000_000, 99_999_999) : null,
      partnerLeadCallId: null,
      bookingId: null,
      soldById: null,
      customerPo: "",
      invoiceId: id + 1,
      membershipId: null,
      total: jobStatus === "Completed" ? int(89, 9800) : null,
      createdFromEstimateId: null,
      estimateIds: NONE,
      equipmentIds: NONE,
      isAutoDispatched: false,
      active: activeAt(i),
    });
  }

  const appointments: FakeStRecord[] = [];
  for (let i = 0; i < counts.appointments; i++) {
    const id = ID_BASE.appointments + i * 13 + 7;
    const job = jobs.length > 0 ? pick(jobs) : null;
    const { createdOn, modifiedOn, created } = stamps("appointments");
    const start = created + int(1, 14) * 86_400_000 + int(7, 16) * 3_600_000;
    const sequence = job ? (job.appointmentCount as number) + 1 : 1;
    if (job) {
      job.appointmentCount = sequence;
      if (sequence === 1) job.firstAppointmentId = id;
      job.lastAppointmentId = id;
    }
    const jobStatus = job?.jobStatus;
    appointments.push({
      id,
      jobId: job?.id ?? 0,
      appointmentNumber: `${job?.jobNumber ?? id}-${sequence}`,
      start: iso(start),
      end: iso(start + 2 * 3_600_000),
      arrivalWindowStart: iso(start),
      arrivalWindowEnd: iso(start + 4 * 3_600_000),
      status: jobStatus === "Completed" ? "Done" : jobStatus === "Canceled" ? "Canceled" : pick(["Scheduled", "Dispatched"]),
      specialInstructions: random() < 0.3 ? "Gate code 4411, dog in the backyard" : null,
      createdOn,
      modifiedOn,
      customerId: job?.customerId ?? 0,
      unused: false,
      createdById: int(1, 40),
      isConfirmed: random() < 0.6,
      active: activeAt(i),
    });
  }

  // Dispatch API appointment assignments: which technicians work which appointment. Generated
  // last, so the other resources stay what they were for a given seed.
  const assignments: FakeStRecord[] = [];
  const wanted = counts["appointment-assignments"];
  if (wanted !== null && wanted > 0 && (appointments.length === 0 || technicians.length === 0)) {
    throw new Error("Fake ServiceTitan: appointment assignments need at least one appointment and one technician");
  }
  const assigned = new Map<number, number[]>(); // appointment id -> technician ids
  const assign = (appointment: FakeStRecord) => {
    const i = assignments.length;
    const taken = assigned.get(appointment.id) ?? [];
    let technician = pick(technicians);
    for (let tries = 0; taken.includes(technician.id) && tries < 5; tries++) technician = pick(technicians);
    assigned.set(appointment.id, [...taken, technician.id]);
    const created = Date.parse(appointment.createdOn);
    const start = Date.parse(appointment.start as string);
    const assignedOn = created + upTo(start - created);
    const modified = Math.min(EPOCH_END, assignedOn + upTo(30 * DAY_MS));
    modifiedOf["appointment-assignments"].push(modified);
    const appointmentStatus = appointment.status;
    const status =
      appointmentStatus === "Done" ? "Done" : appointmentStatus === "Dispatched" ? pick(["Dispatched", "Working"]) : "Scheduled";
    assignments.push({
      id: ID_BASE["appointment-assignments"] + i * 17 + 9,
      technicianId: technician.id,
      technicianName: technician.name,
      assignedById: int(1, 40),
      assignedOn: iso(assignedOn),
      status,
      isPaused: status === "Working" && random() < 0.25,
      jobId: appointment.jobId,
      appointmentId: appointment.id,
      active: activeAt(i) && appointmentStatus !== "Canceled",
      createdOn: iso(assignedOn),
      modifiedOn: iso(modified),
    });
  };
  if (wanted === null) {
    if (technicians.length > 0) {
      for (const appointment of appointments) {
        assign(appointment);
        if (random() < 0.2) assign(appointment);
      }
    }
  } else {
    for (let i = 0; i < wanted; i++) assign(appointments[i] ?? pick(appointments));
  }

  const all = { locations, jobs, appointments, technicians, "appointment-assignments": assignments };
  return Object.fromEntries(RESOURCES.map((resource) => [resource, { records: all[resource], modified: modifiedOf[resource] }])) as Generated;
}

// ---------------------------------------------------------------------------------------------
// Store: one resource's records, indexed by id and kept sorted for the list endpoint (by id)
// and the export feed (by modifiedOn, then id), so a page never sorts or scans the whole set.

/** A stored record and its modifiedOn in milliseconds (its place in the export feed). */
interface Entry {
  record: FakeStRecord;
  m: number;
}

/** The first index of `list` whose item is not `before` (the items `before` must come first). */
function partitionPoint<T>(list: readonly T[], before: (item: T) => boolean): number {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (before(list[middle] as T)) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** Whether `entry` comes at or before the export position (m, id). */
const atOrBefore = (entry: Entry, m: number, id: number) => entry.m < m || (entry.m === m && entry.record.id <= id);

class ResourceStore {
  readonly resource: FakeStResource;
  readonly #byId = new Map<number, Entry>();
  /** Ascending id. */
  readonly byIdOrder: Entry[];
  /** Ascending (m, id): the export feed. */
  readonly feed: Entry[];
  /** The next id `add` hands out: above every id this resource ever had, so none is reused. */
  nextId: number;

  /** `modified[i]` is Date.parse(records[i].modifiedOn). */
  constructor(resource: FakeStResource, records: FakeStRecord[], modified: readonly number[]) {
    this.resource = resource;
    const entries = records.map((record, i) => ({ record, m: modified[i] ?? Date.parse(record.modifiedOn) }));
    for (const entry of entries) this.#byId.set(entry.record.id, entry);
    const ascending = entries.every((entry, i) => i === 0 || (entries[i - 1] as Entry).record.id < entry.record.id);
    this.byIdOrder = ascending ? [...entries] : [...entries].sort((a, b) => a.record.id - b.record.id);
    this.feed = entries.sort((a, b) => a.m - b.m || a.record.id - b.record.id);
    this.nextId = (this.byIdOrder.at(-1)?.record.id ?? ID_BASE[resource]) + 1;
  }

  get(id: number): Entry {
    const entry = this.#byId.get(id);
    if (!entry) throw new Error(`Fake ServiceTitan has no ${this.resource} record ${id}`);
    return entry;
  }

  has(id: number): boolean {
    return this.#byId.has(id);
  }

  /** Latest modifiedOn of the resource in ms; -Infinity when empty. */
  latest(): number {
    return this.feed.at(-1)?.m ?? Number.NEGATIVE_INFINITY;
  }

  insert(record: FakeStRecord, m: number): void {
    const entry = { record, m };
    this.#byId.set(record.id, entry);
    this.byIdOrder.splice(partitionPoint(this.byIdOrder, (e) => e.record.id < record.id), 0, entry);
    this.feed.splice(partitionPoint(this.feed, (e) => atOrBefore(e, m, record.id)), 0, entry);
    this.nextId = Math.max(this.nextId, record.id + 1);
  }

  /** Moves an entry to its new place in the feed after its modifiedOn changed to `m`. */
  reposition(entry: Entry, m: number): void {
    this.#removeFromFeed(entry);
    entry.m = m;
    this.feed.splice(partitionPoint(this.feed, (e) => atOrBefore(e, m, entry.record.id)), 0, entry);
  }

  delete(entry: Entry): void {
    this.#byId.delete(entry.record.id);
    this.byIdOrder.splice(partitionPoint(this.byIdOrder, (e) => e.record.id < entry.record.id), 1);
    this.#removeFromFeed(entry);
  }

  #removeFromFeed(entry: Entry): void {
    const index = partitionPoint(this.feed, (e) => e.m < entry.m || (e.m === entry.m && e.record.id < entry.record.id));
    if (this.feed[index] !== entry) throw new Error(`Fake ServiceTitan lost ${this.resource} record ${entry.record.id} in its export order`);
    this.feed.splice(index, 1);
  }
}

// ---------------------------------------------------------------------------------------------
// Continuation tokens: base64url of the position after the last record returned.

type Position = { m: number; id: number };

function encodePosition(position: Position): string {
  return Buffer.from(JSON.stringify({ v: 1, m: position.m, id: position.id })).toString("base64url");
}

/** A continuation token or a date ("2020-01-01"); null when it is neither. */
function decodeFrom(from: string): { after: Position } | { since: number } | null {
  try {
    const value: unknown = JSON.parse(Buffer.from(from, "base64url").toString("utf8"));
    if (typeof value === "object" && value !== null) {
      const { v, m, id } = value as { v?: unknown; m?: unknown; id?: unknown };
      if (v === 1 && typeof m === "number" && typeof id === "number") return { after: { m, id } };
    }
  } catch {
    // not a token: maybe a date
  }
  if (/^\d{4}-\d{2}-\d{2}/.test(from)) {
    const since = Date.parse(from);
    if (!Number.isNaN(since)) return { since };
  }
  return null;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$/;

// ---------------------------------------------------------------------------------------------
// Server

class HttpError extends Error {
  readonly status: number;
  readonly errors: Record<string, string[]>;
  constructor(status: number, title: string, errors: Record<string, string[]> = {}) {
    super(title);
    this.status = status;
    this.errors = errors;
  }
}

function problem(status: number, title: string, errors: Record<string, string[]> = {}) {
  return {
    type: `https://tools.ietf.org/html/rfc7231#section-6.5.${status === 404 ? 4 : 1}`,
    title,
    status,
    traceId: `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-00`,
    errors,
    data: {},
  };
}

type Fault = { kind: FakeStFault; retryAfterSeconds: number | undefined };

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

export async function startFakeServiceTitan(opts: FakeServiceTitanOptions): Promise<FakeServiceTitan> {
  const counts: GenerateCounts = {
    locations: opts.counts?.locations ?? 25,
    jobs: opts.counts?.jobs ?? 40,
    appointments: opts.counts?.appointments ?? 60,
    technicians: opts.counts?.technicians ?? 8,
    "appointment-assignments": opts.counts?.["appointment-assignments"] ?? null,
  };
  for (const [resource, count] of Object.entries(counts)) {
    if (count !== null && (!Number.isInteger(count) || count < 0)) {
      throw new Error(`Fake ServiceTitan counts.${resource} must be a whole number of at least 0 (got ${count})`);
    }
  }
  const exportPageSize = opts.exportPageSize ?? 500;
  if (!Number.isInteger(exportPageSize) || exportPageSize < 1 || exportPageSize > MAX_PAGE_SIZE) {
    throw new Error(`Fake ServiceTitan exportPageSize must be a whole number from 1 to ${MAX_PAGE_SIZE} (got ${exportPageSize})`);
  }
  const tokenTtlSeconds = opts.tokenTtlSeconds ?? 900;
  const generated = generate(counts, opts.seed ?? 1);
  const stores = Object.fromEntries(
    RESOURCES.map((resource) => [resource, new ResourceStore(resource, generated[resource].records, generated[resource].modified)]),
  ) as Record<FakeStResource, ResourceStore>;
  const requests: FakeStRequest[] = [];
  const tokens = new Map<string, number>(); // token -> expires at (ms)
  const faults: Fault[] = [];
  let tokenRequestCount = 0;
  /** The latest modifiedOn of any record ever stored, in ms. */
  let latestModified = Math.max(...RESOURCES.map((resource) => stores[resource].latest()));

  /** A modifiedOn for a change made now: now, but later than any other record's. */
  function nextModified(): number {
    latestModified = Math.max(Date.now(), latestModified + 1);
    return latestModified;
  }

  function bump(store: ResourceStore, entry: Entry): void {
    const m = nextModified();
    entry.record.modifiedOn = iso(m);
    store.reposition(entry, m);
  }

  /** An ISO 8601 date given to `add`, in ms. */
  function dateField(resource: FakeStResource, name: string, value: unknown): number {
    const ms = typeof value === "string" && /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : Number.NaN;
    if (Number.isNaN(ms)) throw new Error(`Fake ServiceTitan ${resource}.${name} must be an ISO 8601 date (got ${JSON.stringify(value)})`);
    return ms;
  }

  // --- token endpoint ---------------------------------------------------------------------------

  function issueToken(req: IncomingMessage, body: string): { status: number; json: unknown } {
    tokenRequestCount += 1;
    const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
    if (type !== "application/x-www-form-urlencoded") {
      return { status: 400, json: { error: "invalid_request", error_description: "Form content type expected" } };
    }
    const form = new URLSearchParams(body);
    if (form.get("grant_type") !== "client_credentials") {
      return { status: 400, json: { error: form.get("grant_type") ? "unsupported_grant_type" : "invalid_request" } };
    }
    if (form.get("client_id") !== opts.clientId || form.get("client_secret") !== opts.clientSecret) {
      return { status: 400, json: { error: "invalid_client" } };
    }
    const token = `fake-st.${randomBytes(24).toString("base64url")}`;
    tokens.set(token, Date.now() + tokenTtlSeconds * 1000);
    return {
      status: 200,
      json: {
        access_token: token,
        expires_in: tokenTtlSeconds,
        token_type: "Bearer",
        scope: "tn.crm.locations:r tn.jpm.jobs:r tn.jpm.appointments:r tn.settings.technicians:r tn.dis.appointmentassignments:r",
      },
    };
  }

  // --- API --------------------------------------------------------------------------------------

  /** The `active` filter (True | Any | False, case-insensitive), or null when the value is not one. */
  function activeFilter(query: Record<string, string>): ((record: FakeStRecord) => boolean) | null {
    const active = (query.active ?? "True").toLowerCase();
    if (active === "any") return () => true;
    if (active === "true" || active === "false") return (record) => record.active === (active === "true");
    return null;
  }

  function exportFeed(resource: FakeStResource, query: Record<string, string>) {
    const feed = stores[resource].feed;
    // Only the feeds ServiceTitan gives an `active` parameter filter; the others ignore it.
    const matches = EXPORT_ACTIVE_FILTER.has(resource) ? activeFilter(query) : () => true;
    if (!matches) throw new HttpError(400, "One or more validation errors occurred.", { active: [`The value '${query.active}' is not valid.`] });
    const from = query.from;
    let start = 0;
    if (from !== undefined && from !== "") {
      const decoded = decodeFrom(from);
      if (!decoded) throw new HttpError(400, "One or more validation errors occurred.", { from: ["Invalid continuation token."] });
      start =
        "after" in decoded
          ? partitionPoint(feed, (e) => atOrBefore(e, decoded.after.m, decoded.after.id))
          : partitionPoint(feed, (e) => e.m < decoded.since);
    }
    let end = feed.length;
    if ((query.includeRecentChanges ?? "").toLowerCase() !== "true") {
      const visibleUntil = Date.now() - RECENT_CHANGES_DELAY_MS;
      end = Math.max(start, partitionPoint(feed, (e) => e.m <= visibleUntil));
    }
    const page: Entry[] = [];
    let next = start;
    for (; next < end && page.length < exportPageSize; next++) {
      const entry = feed[next] as Entry;
      if (matches(entry.record)) page.push(entry);
    }
    let hasMore = false;
    for (; next < end && !hasMore; next++) hasMore = matches((feed[next] as Entry).record);
    const last = page.at(-1);
    const continueFrom = last
      ? encodePosition({ m: last.m, id: last.record.id })
      : from !== undefined && from !== ""
        ? from
        : encodePosition({ m: -1, id: 0 });
    return { hasMore, continueFrom, data: page.map((entry) => entry.record) };
  }

  function list(resource: FakeStResource, query: Record<string, string>) {
    const errors: Record<string, string[]> = {};
    const intParam = (name: string, fallback: number): number => {
      const raw = query[name];
      if (raw === undefined || raw === "") return fallback;
      if (!/^-?\d+$/.test(raw)) {
        errors[name] = [`The value '${raw}' is not valid.`];
        return fallback;
      }
      return Number(raw);
    };
    const page = intParam("page", 1);
    const pageSize = intParam("pageSize", 50);
    if (page < 1) errors.page = ["The field Page must be between 1 and 2147483647."];
    if (pageSize < 1 || pageSize > MAX_PAGE_SIZE) errors.pageSize = [`The field PageSize must be between 1 and ${MAX_PAGE_SIZE}.`];
    let since: number | null = null;
    const rawSince = query.modifiedOnOrAfter;
    if (rawSince !== undefined && rawSince !== "") {
      since = RFC3339.test(rawSince) ? Date.parse(rawSince) : Number.NaN;
      if (Number.isNaN(since)) errors.modifiedOnOrAfter = [`The value '${rawSince}' is not valid.`];
    }
    const activeMatches = activeFilter(query);
    if (!activeMatches) errors.active = [`The value '${query.active}' is not valid.`];
    if (!activeMatches || Object.keys(errors).length > 0) throw new HttpError(400, "One or more validation errors occurred.", errors);

    const all = stores[resource].byIdOrder;
    const start = (page - 1) * pageSize;
    const includeTotal = (query.includeTotal ?? "").toLowerCase() === "true";
    const unfiltered = (query.active ?? "").toLowerCase() === "any" && since === null;
    let data: FakeStRecord[];
    let matching: number; // how many match, or at least start + pageSize + 1 when counting stopped early
    if (unfiltered) {
      data = all.slice(start, start + pageSize).map((entry) => entry.record);
      matching = all.length;
    } else {
      data = [];
      matching = 0;
      for (const entry of all) {
        if (!activeMatches(entry.record) || (since !== null && entry.m < since)) continue;
        if (matching >= start && data.length < pageSize) data.push(entry.record);
        matching += 1;
        if (!includeTotal && matching > start + pageSize) break;
      }
    }
    return { page, pageSize, hasMore: matching > start + pageSize, totalCount: includeTotal ? matching : null, data };
  }

  function routeApi(method: string, path: string, query: Record<string, string>): unknown {
    const m = /^\/(crm|jpm|settings|dispatch)\/v2\/tenant\/(\d+)\/(export\/)?([a-z-]+)$/.exec(path);
    const resource = RESOURCES.find((r) => r === m?.[4]);
    if (!m || !resource || MODULES[resource] !== m[1] || method !== "GET") throw new HttpError(404, "Not Found");
    if (m[2] !== opts.tenantId) throw new HttpError(403, `The app is not connected to tenant ${m[2]}.`);
    return m[3] ? exportFeed(resource, query) : list(resource, query);
  }

  function apiAuthError(req: IncomingMessage): { status: number; json: unknown; header?: string } | null {
    const appKey = req.headers["st-app-key"];
    if (appKey === undefined || appKey === "") {
      return { status: 401, json: problem(401, "Application key not present, check ST-App-Key header value.") };
    }
    if (appKey !== opts.appKey) return { status: 401, json: problem(401, "Invalid application key.") };
    const match = /^Bearer (.+)$/i.exec(req.headers.authorization ?? "");
    const expiresAt = match?.[1] ? tokens.get(match[1]) : undefined;
    if (expiresAt === undefined || expiresAt <= Date.now()) {
      return { status: 401, json: problem(401, "Unauthorized"), header: 'Bearer error="invalid_token"' };
    }
    return null;
  }

  // --- plumbing ---------------------------------------------------------------------------------

  function send(res: ServerResponse, entry: FakeStRequest, status: number, json: unknown, headers: Record<string, string> = {}): void {
    entry.status = status;
    res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", ...headers }).end(JSON.stringify(json));
  }

  async function handle(server: "auth" | "api", req: IncomingMessage, res: ServerResponse): Promise<void> {
    const at = Date.now();
    const url = new URL(req.url ?? "/", "http://fake-servicetitan");
    const method = req.method ?? "GET";
    const entry: FakeStRequest = { at, server, method, path: url.pathname, query: Object.fromEntries(url.searchParams), status: null };
    requests.push(entry);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");

    if (server === "auth") {
      if (url.pathname !== "/connect/token" || method !== "POST") return send(res, entry, 404, { error: "not_found" });
      const answer = issueToken(req, body);
      return send(res, entry, answer.status, answer.json);
    }

    const authError = apiAuthError(req);
    if (authError) return send(res, entry, authError.status, authError.json, authError.header ? { "WWW-Authenticate": authError.header } : {});
    const fault = faults.shift();
    if (fault) entry.fault = fault.kind;
    if (fault?.kind === "timeout") return; // held open: the client has to give up
    if (fault?.kind === "429") {
      const headers: Record<string, string> = fault.retryAfterSeconds === undefined ? {} : { "Retry-After": String(fault.retryAfterSeconds) };
      return send(res, entry, 429, problem(429, "Too Many Requests"), headers);
    }
    if (fault?.kind === "500") return send(res, entry, 500, problem(500, "An unexpected error occurred."));
    try {
      const json = routeApi(method, url.pathname, entry.query);
      if (fault?.kind === "malformed") {
        const text = JSON.stringify(json);
        entry.status = 200;
        res.writeHead(200, { "Content-Type": "application/json; charset=utf-8" }).end(text.slice(0, Math.max(1, Math.floor(text.length / 2))));
        return;
      }
      send(res, entry, 200, json);
    } catch (err) {
      if (err instanceof HttpError) return send(res, entry, err.status, problem(err.status, err.message, err.errors));
      send(res, entry, 500, problem(500, err instanceof Error ? err.message : String(err)));
    }
  }

  function serve(kind: "auth" | "api"): Server {
    return createServer((req, res) => {
      handle(kind, req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(err));
      });
    });
  }

  const authServer = serve("auth");
  const apiServer = serve("api");
  const authUrl = await listen(authServer);
  const apiUrl = await listen(apiServer);

  return {
    authUrl,
    apiUrl,
    requests,
    records(resource) {
      return structuredClone(stores[resource].byIdOrder.map((entry) => entry.record));
    },
    modify(resource, id, patch = {}) {
      const store = stores[resource];
      const entry = store.get(id);
      Object.assign(entry.record, structuredClone(patch), { id });
      bump(store, entry);
      return structuredClone(entry.record);
    },
    deactivate(resource, id) {
      const store = stores[resource];
      const entry = store.get(id);
      entry.record.active = false;
      bump(store, entry);
      return structuredClone(entry.record);
    },
    add(resource, fields) {
      const store = stores[resource];
      const id = fields.id ?? store.nextId;
      if (!Number.isSafeInteger(id) || id < 1) throw new Error(`Fake ServiceTitan ${resource} id must be a positive whole number (got ${id})`);
      if (store.has(id)) throw new Error(`Fake ServiceTitan already has ${resource} record ${id}`);
      const modified = fields.modifiedOn === undefined ? nextModified() : dateField(resource, "modifiedOn", fields.modifiedOn);
      const created = fields.createdOn === undefined ? Math.min(Date.now(), modified) : dateField(resource, "createdOn", fields.createdOn);
      latestModified = Math.max(latestModified, modified);
      const record: FakeStRecord = {
        ...structuredClone(fields),
        id,
        active: fields.active ?? true,
        createdOn: iso(created),
        modifiedOn: iso(modified),
      };
      store.insert(record, modified);
      return structuredClone(record);
    },
    remove(resource, id) {
      const store = stores[resource];
      const entry = store.get(id);
      store.delete(entry);
      return structuredClone(entry.record);
    },
    failNext(count, kind, retryAfterSeconds) {
      for (let i = 0; i < count; i++) faults.push({ kind, retryAfterSeconds });
    },
    expireTokensNow() {
      for (const token of tokens.keys()) tokens.set(token, 0);
    },
    tokenRequests() {
      return tokenRequestCount;
    },
    async close() {
      for (const server of [authServer, apiServer]) {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
  };
}
