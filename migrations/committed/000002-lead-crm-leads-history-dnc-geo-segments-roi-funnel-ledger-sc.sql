--! Previous: sha1:5e6d7d0143cc40317d1955ec7efc454e34f938d3
--! Hash: sha1:5e1e54128aa3be9ebc5553f429ec8ccd7a13edc9
--! Message: lead CRM: leads, history, DNC, geo, segments, ROI, funnel, ledger, scoring, import

--! split: 010-leads.sql
--------------------------------------------------------------------------------
-- Lead CRM data model: statuses, leads, their history tables, assignments and the
-- do-not-contact list. Logic (triggers, functions) lives in the files after this one.
-- Idempotent: drops what it creates (graphile-migrate re-runs current/ on change).
--------------------------------------------------------------------------------

drop table if exists app_public.lead_assignments, app_public.lead_score_history, app_public.lead_status_history,
  app_public.lead_audit_log, app_public.dnc_list, app_public.leads, app_public.lead_statuses cascade;
drop domain if exists app_public.e164_phone cascade;

create domain app_public.e164_phone as text
  constraint phone_must_be_e164 check (value ~ '^\+[1-9][0-9]{6,14}$');
comment on domain app_public.e164_phone is 'A phone number in E.164 form: +, country code and number, 7 to 15 digits, e.g. +12125551234.';

--------------------------------------------------------------------------------
-- Statuses: reference data shared by every tenant.
--------------------------------------------------------------------------------
create table app_public.lead_statuses (
  status text primary key,
  stage_order int,
  outcome text,
  is_final boolean not null default false,
  description text not null,
  constraint lead_statuses_outcome_must_be_won_or_lost check (outcome in ('won', 'lost')),
  constraint lead_statuses_stage_order_must_be_positive check (stage_order > 0)
);
comment on table app_public.lead_statuses is $$The statuses a lead can have, in funnel order. The funnel is new → contacted → qualified → hot → won (stage_order 1 to 5). Off the main path: nurturing (a follow-up sequence is warming the lead; funnel stage 2, like contacted) and cold (gone quiet; stage 2). Outcomes: won (the job was booked or the sale made), recruited (the won outcome for recruiting, e.g. a DJ who joined the marketplace), lost (the lead chose someone else or dropped out; say why in lost_reason), and dnc (the person asked not to be contacted: the number goes on the do-not-contact list).$$;
comment on column app_public.lead_statuses.status is 'The status name, as stored in leads.status.';
comment on column app_public.lead_statuses.stage_order is 'Position in the funnel (1 = new … 5 = won); null for exits that are not a funnel stage (lost, dnc).';
comment on column app_public.lead_statuses.outcome is 'won or lost for final outcomes, null while the lead is open.';
comment on column app_public.lead_statuses.is_final is 'True for outcomes (won, recruited, lost, dnc): nurture and routing stop there.';
comment on column app_public.lead_statuses.description is 'What the status means.';

insert into app_public.lead_statuses (status, stage_order, outcome, is_final, description) values
  ('new', 1, null, false, 'Just captured; nobody has talked to the person yet.'),
  ('contacted', 2, null, false, 'Someone (or an automated message) reached the person.'),
  ('nurturing', 2, null, false, 'In a follow-up sequence; not ready yet.'),
  ('cold', 2, null, false, 'Gone quiet after contact.'),
  ('qualified', 3, null, false, 'A real need, budget and timing: worth a proposal or a visit.'),
  ('hot', 4, null, false, 'Ready to buy or book now.'),
  ('won', 5, 'won', true, 'The job was booked or the sale made.'),
  ('recruited', 5, 'won', true, 'Recruiting outcome: the person joined (e.g. a DJ joined the marketplace).'),
  ('lost', null, 'lost', true, 'The person chose someone else or dropped out (see lost_reason).'),
  ('dnc', null, 'lost', true, 'The person asked not to be contacted; their number is on the do-not-contact list.');

alter table app_public.lead_statuses enable row level security;
alter table app_public.lead_statuses force row level security;
create policy owner_all on app_public.lead_statuses for all to :DATABASE_OWNER using (true) with check (true);
create policy select_all on app_public.lead_statuses for select to :DATABASE_VISITOR using (true);
grant select on app_public.lead_statuses to :DATABASE_VISITOR;

--------------------------------------------------------------------------------
-- Leads
--------------------------------------------------------------------------------
create table app_public.leads (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  first_name text,
  last_name text,
  full_name text generated always as (pg_catalog.btrim(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))) stored,
  phone app_public.e164_phone,
  email public.citext,
  address text,
  city text,
  region text,
  postal_code text,
  country text not null default 'US',
  timezone text,
  source text not null default 'manual',
  tags text[] not null default '{}',
  status text not null default 'new',
  lead_score int not null default 0,
  lead_score_factors jsonb not null default '{}',
  owner_user_id uuid,
  last_contact_at timestamptz,
  problem_description text,
  job_type text,
  urgency text not null default 'normal',
  estimated_value numeric(12, 2),
  event_date date,
  event_type text,
  service_line text,
  customer_segment text,
  language text not null default 'en',
  ai_analysis jsonb,
  appointment_at timestamptz,
  conversion_value numeric(12, 2),
  lost_reason text,
  attributes jsonb not null default '{}',
  deleted_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint leads_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint leads_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint leads_owner_must_be_a_member foreign key (tenant_id, owner_user_id)
    references app_public.memberships (tenant_id, user_id) on delete set null (owner_user_id),
  constraint leads_status_must_be_known foreign key (status) references app_public.lead_statuses (status),
  constraint leads_need_a_phone_or_an_email check (phone is not null or email is not null),
  constraint leads_email_must_look_like_an_email check (email is null or app_hidden.is_valid_email(email::text)),
  constraint leads_lead_score_must_be_between_0_and_100 check (lead_score between 0 and 100),
  constraint leads_lead_score_factors_must_be_an_object check (pg_catalog.jsonb_typeof(lead_score_factors) = 'object'),
  constraint leads_country_must_be_an_iso_code check (country ~ '^[A-Z]{2}$'),
  constraint leads_source_must_not_be_blank check (pg_catalog.btrim(source) <> '' and pg_catalog.length(source) <= 100),
  constraint leads_tags_must_not_be_blank check (array_position(tags, '') is null and array_position(tags, null) is null),
  constraint leads_urgency_must_be_known check (urgency in ('low', 'normal', 'high', 'emergency')),
  constraint leads_estimated_value_must_not_be_negative check (estimated_value >= 0),
  constraint leads_conversion_value_must_not_be_negative check (conversion_value >= 0),
  constraint leads_language_must_be_a_language_tag check (language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
  constraint leads_attributes_must_be_an_object check (pg_catalog.jsonb_typeof(attributes) = 'object'),
  constraint leads_ai_analysis_must_be_an_object check (ai_analysis is null or pg_catalog.jsonb_typeof(ai_analysis) = 'object')
);
comment on table app_public.leads is $$A person who might become a customer, in one tenant: the CRM record every part of Switchboard uses (web forms, imports, missed calls, texts, routing, nurture). Every change is recorded by triggers in lead_audit_log, lead_status_history, lead_score_history and lead_assignments. Deleting is soft (deleted_at; see delete_lead and restore_lead). A phone number is unique among a tenant's non-deleted leads.
@behavior -delete$$;
comment on column app_public.leads.id is 'The lead''s id.';
comment on column app_public.leads.tenant_id is 'The tenant this lead belongs to.';
comment on column app_public.leads.first_name is 'First name.';
comment on column app_public.leads.last_name is 'Last name.';
comment on column app_public.leads.full_name is 'First and last name together (computed), used for name search.';
comment on column app_public.leads.phone is 'Phone number in E.164 form (+12125551234). Unique among the tenant''s non-deleted leads.';
comment on column app_public.leads.email is 'Email address (case-insensitive).';
comment on column app_public.leads.address is 'Street address.';
comment on column app_public.leads.city is 'City.';
comment on column app_public.leads.region is 'State, province or region (e.g. FL); used for state messaging rules.';
comment on column app_public.leads.postal_code is 'Postal or ZIP code.';
comment on column app_public.leads.country is 'ISO 3166-1 alpha-2 country code (e.g. US).';
comment on column app_public.leads.timezone is 'The lead''s IANA timezone. When not given, derived from the phone''s area code where known, else the tenant''s timezone.';
comment on column app_public.leads.source is 'Where the lead came from (e.g. google_ads, referral, missed_call, import); used for source ROI.';
comment on column app_public.leads.tags is 'Free-form labels; filter with any/all through find_leads or segments.';
comment on column app_public.leads.status is 'Where the lead stands (see lead_statuses): new, contacted, nurturing, cold, qualified, hot, won, recruited, lost or dnc.';
comment on column app_public.leads.lead_score is 'Score from 0 to 100, maintained by calculate_lead_score.';
comment on column app_public.leads.lead_score_factors is 'The score''s breakdown: {"qualification", "engagement", "intent", "demographic", "total"}.';
comment on column app_public.leads.owner_user_id is 'The member who owns the lead (changes are recorded in lead_assignments).';
comment on column app_public.leads.last_contact_at is 'When someone last reached the lead.';
comment on column app_public.leads.problem_description is 'What the person needs, in their words.';
comment on column app_public.leads.job_type is 'Kind of job (e.g. water_heater, wedding).';
comment on column app_public.leads.urgency is 'How urgent: low, normal, high or emergency.';
comment on column app_public.leads.estimated_value is 'Estimated value of the job, in the tenant''s currency.';
comment on column app_public.leads.event_date is 'Date of the event, for event leads (e.g. a wedding needing a DJ).';
comment on column app_public.leads.event_type is 'Kind of event, for event leads.';
comment on column app_public.leads.service_line is 'Service or insurance line (e.g. auto, home), for routing by specialisation.';
comment on column app_public.leads.customer_segment is 'Customer segment (e.g. residential, commercial, small_business).';
comment on column app_public.leads.language is 'Preferred language as a BCP 47 tag (e.g. en, es, pt-BR).';
comment on column app_public.leads.ai_analysis is 'What the AI assistant concluded about the lead (JSON object).';
comment on column app_public.leads.appointment_at is 'When the booked appointment is.';
comment on column app_public.leads.conversion_value is 'What the lead was worth once won.';
comment on column app_public.leads.lost_reason is 'Why the lead was lost.';
comment on column app_public.leads.attributes is 'Any other fields, as a JSON object.';
comment on column app_public.leads.deleted_at is 'When the lead was (soft) deleted; null while it is live. See delete_lead and restore_lead.';
comment on column app_public.leads.created_at is 'When the lead was captured.';
comment on column app_public.leads.updated_at is 'When the lead last changed.';

create unique index leads_phone_must_be_unique_per_tenant on app_public.leads (tenant_id, phone)
  where deleted_at is null and phone is not null;
create index leads_live_by_status on app_public.leads (tenant_id, status) where deleted_at is null;
create index leads_live_by_score on app_public.leads (tenant_id, lead_score desc) where deleted_at is null;
create index leads_live_by_created on app_public.leads (tenant_id, created_at desc) where deleted_at is null;
create index leads_live_by_source on app_public.leads (tenant_id, source, created_at) where deleted_at is null;
create index leads_live_by_owner on app_public.leads (tenant_id, owner_user_id) where deleted_at is null;
create index leads_live_by_email on app_public.leads (tenant_id, email) where deleted_at is null;
create index leads_tags on app_public.leads using gin (tags);
create index leads_full_name_trgm on app_public.leads using gin (full_name public.gin_trgm_ops);
create index leads_email_trgm on app_public.leads using gin ((email::text) public.gin_trgm_ops);

alter table app_public.leads enable row level security;
alter table app_public.leads force row level security;
create policy owner_all on app_public.leads for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.leads for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.leads for insert to :DATABASE_VISITOR
  with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.leads for update to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()))
  with check (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.leads to :DATABASE_VISITOR;
grant insert (tenant_id, first_name, last_name, phone, email, address, city, region, postal_code, country, timezone, source, tags, status,
  owner_user_id, last_contact_at, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line,
  customer_segment, language, ai_analysis, appointment_at, conversion_value, lost_reason, attributes) on app_public.leads to :DATABASE_VISITOR;
grant update (first_name, last_name, phone, email, address, city, region, postal_code, country, timezone, source, tags, status,
  last_contact_at, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line,
  customer_segment, language, ai_analysis, appointment_at, conversion_value, lost_reason, attributes) on app_public.leads to :DATABASE_VISITOR;
-- owner_user_id changes through reassign_lead (managers) so every ownership change is recorded with its reason.
-- lead_score/lead_score_factors are written only by the scoring function; deleted_at only by delete_lead/restore_lead.

create trigger _100_timestamps before insert or update on app_public.leads
  for each row execute function app_private.tg__timestamps();

--------------------------------------------------------------------------------
-- History tables (written by triggers only: the visitor may read, never write)
--------------------------------------------------------------------------------
create table app_public.lead_audit_log (
  id bigint generated always as identity primary key,
  tenant_id uuid not null,
  lead_id uuid not null,
  field_name text not null,
  old_value jsonb,
  new_value jsonb,
  changed_by_user_id uuid,
  changed_by_api_key_id uuid,
  change_source text not null,
  changed_at timestamptz not null default now(),
  constraint lead_audit_log_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint lead_audit_log_change_source_must_be_known check (change_source in ('manual', 'import', 'automation', 'routing', 'webhook', 'system'))
);
comment on table app_public.lead_audit_log is 'One row per changed field of a lead: old and new value, who (a user, an API key, or the system when both are null), when, and through what (change_source). Written by the generic audit trigger; read-only for everyone else.';
comment on column app_public.lead_audit_log.id is 'Sequence number of the change.';
comment on column app_public.lead_audit_log.tenant_id is 'The tenant of the lead.';
comment on column app_public.lead_audit_log.lead_id is 'The lead that changed.';
comment on column app_public.lead_audit_log.field_name is 'The column that changed (or "*created*" / "*deleted*" / "*restored*" for those events).';
comment on column app_public.lead_audit_log.old_value is 'The value before the change, as JSON (null when it was empty or the row was created).';
comment on column app_public.lead_audit_log.new_value is 'The value after the change, as JSON.';
comment on column app_public.lead_audit_log.changed_by_user_id is 'The user who made the change, if a user did.';
comment on column app_public.lead_audit_log.changed_by_api_key_id is 'The API key that made the change, if one did.';
comment on column app_public.lead_audit_log.change_source is 'Through what the change came: manual, import, automation, routing, webhook or system.';
comment on column app_public.lead_audit_log.changed_at is 'When the change happened.';
create index lead_audit_log_by_lead on app_public.lead_audit_log (tenant_id, lead_id, changed_at);

create table app_public.lead_status_history (
  id bigint generated always as identity primary key,
  tenant_id uuid not null,
  lead_id uuid not null,
  from_status text,
  to_status text not null,
  trigger_type text not null,
  changed_by_user_id uuid,
  changed_at timestamptz not null default now(),
  constraint lead_status_history_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint lead_status_history_trigger_type_must_be_known check (trigger_type in ('manual', 'import', 'automation', 'routing', 'webhook', 'system'))
);
comment on table app_public.lead_status_history is 'Every status a lead entered (from, to, what triggered it, when); the funnel is computed from it. Written by a trigger on leads.';
comment on column app_public.lead_status_history.id is 'Sequence number of the transition.';
comment on column app_public.lead_status_history.tenant_id is 'The tenant of the lead.';
comment on column app_public.lead_status_history.lead_id is 'The lead.';
comment on column app_public.lead_status_history.from_status is 'The status before (null when the lead was created).';
comment on column app_public.lead_status_history.to_status is 'The status entered.';
comment on column app_public.lead_status_history.trigger_type is 'What caused the transition: manual, import, automation, routing, webhook or system.';
comment on column app_public.lead_status_history.changed_by_user_id is 'The user who changed it, if a user did.';
comment on column app_public.lead_status_history.changed_at is 'When the lead entered to_status.';
create index lead_status_history_by_lead on app_public.lead_status_history (tenant_id, lead_id, changed_at);
create index lead_status_history_by_time on app_public.lead_status_history (tenant_id, changed_at, to_status);

create table app_public.lead_score_history (
  id bigint generated always as identity primary key,
  tenant_id uuid not null,
  lead_id uuid not null,
  score int not null,
  factors jsonb not null,
  calculated_at timestamptz not null default now(),
  constraint lead_score_history_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint lead_score_history_score_must_be_between_0_and_100 check (score between 0 and 100)
);
comment on table app_public.lead_score_history is 'Every score a lead was given, with its factors. Written by a trigger when leads.lead_score changes.';
comment on column app_public.lead_score_history.id is 'Sequence number.';
comment on column app_public.lead_score_history.tenant_id is 'The tenant of the lead.';
comment on column app_public.lead_score_history.lead_id is 'The lead.';
comment on column app_public.lead_score_history.score is 'The score, 0 to 100.';
comment on column app_public.lead_score_history.factors is 'The breakdown: qualification, engagement, intent, demographic, total.';
comment on column app_public.lead_score_history.calculated_at is 'When the score was calculated.';
create index lead_score_history_by_lead on app_public.lead_score_history (tenant_id, lead_id, calculated_at);

create table app_public.lead_assignments (
  id bigint generated always as identity primary key,
  tenant_id uuid not null,
  lead_id uuid not null,
  from_user_id uuid,
  to_user_id uuid,
  strategy text not null,
  reason text,
  assigned_by_user_id uuid,
  assigned_at timestamptz not null default now(),
  constraint lead_assignments_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint lead_assignments_strategy_must_be_known check (strategy in ('manual', 'round_robin', 'weighted_round_robin', 'least_loaded', 'best_match', 'score_tiered', 'direct_to_owner', 'rule', 'import', 'system'))
);
comment on table app_public.lead_assignments is 'Every change of a lead''s owner: from whom, to whom, by which strategy and why. Written by a trigger when leads.owner_user_id changes.';
comment on column app_public.lead_assignments.id is 'Sequence number.';
comment on column app_public.lead_assignments.tenant_id is 'The tenant of the lead.';
comment on column app_public.lead_assignments.lead_id is 'The lead.';
comment on column app_public.lead_assignments.from_user_id is 'The previous owner (null if none).';
comment on column app_public.lead_assignments.to_user_id is 'The new owner (null when unassigned).';
comment on column app_public.lead_assignments.strategy is 'How the owner was chosen: manual, round_robin, weighted_round_robin, least_loaded, best_match, score_tiered, direct_to_owner, rule, import or system.';
comment on column app_public.lead_assignments.reason is 'Why, in words.';
comment on column app_public.lead_assignments.assigned_by_user_id is 'Who made the change, if a user did.';
comment on column app_public.lead_assignments.assigned_at is 'When.';
create index lead_assignments_by_lead on app_public.lead_assignments (tenant_id, lead_id, assigned_at);

--------------------------------------------------------------------------------
-- Do-not-contact list
--------------------------------------------------------------------------------
create table app_public.dnc_list (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  phone app_public.e164_phone not null,
  reason text,
  source text not null default 'manual',
  added_by_user_id uuid,
  added_at timestamptz not null default now(),
  constraint dnc_list_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint dnc_list_phone_must_be_unique_per_tenant unique (tenant_id, phone),
  constraint dnc_list_source_must_be_known check (source in ('manual', 'lead_status', 'sms_opt_out', 'import', 'api', 'system'))
);
comment on table app_public.dnc_list is $$The tenant's do-not-contact list. RULE: nothing in Switchboard may text or call a number on this list — the database refuses to queue such a message or call (see is_on_dnc_list). A lead set to status dnc adds its number here; removals are recorded in the audit log.$$;
comment on column app_public.dnc_list.id is 'The entry''s id.';
comment on column app_public.dnc_list.tenant_id is 'The tenant whose list this is.';
comment on column app_public.dnc_list.phone is 'The number that must not be contacted (E.164).';
comment on column app_public.dnc_list.reason is 'Why it is on the list, in words.';
comment on column app_public.dnc_list.source is 'How it got there: manual, lead_status, sms_opt_out, import, api or system.';
comment on column app_public.dnc_list.added_by_user_id is 'Who added it, if a user did.';
comment on column app_public.dnc_list.added_at is 'When it was added.';

alter table app_public.dnc_list enable row level security;
alter table app_public.dnc_list force row level security;
create policy owner_all on app_public.dnc_list for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.dnc_list for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.dnc_list for insert to :DATABASE_VISITOR
  with check (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.dnc_list to :DATABASE_VISITOR;
grant insert (tenant_id, phone, reason, source) on app_public.dnc_list to :DATABASE_VISITOR;
-- Removal goes through remove_from_dnc_list (managers and up), which records who and why.

-- History tables: RLS, read-only for the visitor.
alter table app_public.lead_audit_log enable row level security;
alter table app_public.lead_audit_log force row level security;
create policy owner_all on app_public.lead_audit_log for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.lead_audit_log for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.lead_audit_log to :DATABASE_VISITOR;

alter table app_public.lead_status_history enable row level security;
alter table app_public.lead_status_history force row level security;
create policy owner_all on app_public.lead_status_history for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.lead_status_history for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.lead_status_history to :DATABASE_VISITOR;

alter table app_public.lead_score_history enable row level security;
alter table app_public.lead_score_history force row level security;
create policy owner_all on app_public.lead_score_history for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.lead_score_history for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.lead_score_history to :DATABASE_VISITOR;

alter table app_public.lead_assignments enable row level security;
alter table app_public.lead_assignments force row level security;
create policy owner_all on app_public.lead_assignments for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.lead_assignments for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.lead_assignments to :DATABASE_VISITOR;

--! split: 015-geo.sql
--------------------------------------------------------------------------------
-- Geography of a lead: which state/province and which IANA time zone a phone number
-- belongs to, and the trigger that fills leads.timezone (and leads.region/country)
-- when they are not given. SMS quiet hours (federal 8:00-21:00 local time; stricter
-- state rules) will read leads.region and leads.timezone, so the reference data here
-- must be right: it is validated at the end of this file and the migration fails if not.
-- Idempotent: drops what it creates (graphile-migrate re-runs current/ on change).
-- 010-leads.sql drops and recreates app_public.leads (and with it the trigger made here) first.
-- (No quote marks in the comments of this file: the SQL minifier used by graphile-migrate trips on them.)
--------------------------------------------------------------------------------

drop trigger if exists _050_derive_timezone on app_public.leads;
drop function if exists app_private.tg_leads__derive_timezone();
drop function if exists app_private.lead_default_timezone(uuid, text, text, text);
drop function if exists app_public.timezone_for_phone(text);
drop function if exists app_public.phone_region(text);
drop function if exists app_public.timezone_for_region(text, text);
drop table if exists app_public.phone_area_codes, app_public.region_timezones cascade;

--------------------------------------------------------------------------------
-- States, provinces and territories with their primary time zone
--------------------------------------------------------------------------------
create table app_public.region_timezones (
  country text not null,
  region text not null,
  name text not null,
  timezone text not null,
  primary key (country, region),
  constraint region_timezones_country_must_be_us_or_ca check (country in ('US', 'CA')),
  constraint region_timezones_region_must_be_a_two_letter_code check (region ~ '^[A-Z]{2}$'),
  constraint region_timezones_name_must_be_unique_per_country unique (country, name)
);
comment on table app_public.region_timezones is $$Reference data shared by every tenant (read-only): each US state, the District of Columbia, the inhabited US territories (PR, VI, GU, MP, AS, filed under country US as in ISO 3166-2:US) and each Canadian province and territory, with its primary IANA time zone. For a state or province split between zones, the zone of the majority of its population (e.g. FL America/New_York, TX America/Chicago, TN America/Chicago, IN America/Indiana/Indianapolis, ID America/Boise, AZ America/Phoenix without daylight saving). Used for a lead whose phone number says nothing about where it is. Basis: IANA tz database zone boundaries and census population, as of 2025.$$;
comment on column app_public.region_timezones.country is 'ISO 3166-1 alpha-2 country: US (states, DC and territories) or CA.';
comment on column app_public.region_timezones.region is 'Postal code of the state, province or territory (e.g. FL, DC, PR, ON); the same as ISO 3166-2 without the country prefix.';
comment on column app_public.region_timezones.name is 'The region''s English name (e.g. Florida, Quebec).';
comment on column app_public.region_timezones.timezone is 'The IANA time zone most of the region''s people live in, e.g. America/New_York.';

insert into app_public.region_timezones (country, region, name, timezone) values
  ('US', 'AL', 'Alabama', 'America/Chicago'),
  ('US', 'AK', 'Alaska', 'America/Anchorage'),             -- the western Aleutians use America/Adak
  ('US', 'AZ', 'Arizona', 'America/Phoenix'),              -- no daylight saving (the Navajo Nation observes it)
  ('US', 'AR', 'Arkansas', 'America/Chicago'),
  ('US', 'CA', 'California', 'America/Los_Angeles'),
  ('US', 'CO', 'Colorado', 'America/Denver'),
  ('US', 'CT', 'Connecticut', 'America/New_York'),
  ('US', 'DE', 'Delaware', 'America/New_York'),
  ('US', 'DC', 'District of Columbia', 'America/New_York'),
  ('US', 'FL', 'Florida', 'America/New_York'),             -- the western Panhandle is Central
  ('US', 'GA', 'Georgia', 'America/New_York'),
  ('US', 'HI', 'Hawaii', 'Pacific/Honolulu'),
  ('US', 'ID', 'Idaho', 'America/Boise'),                  -- Mountain; the northern Panhandle is Pacific
  ('US', 'IL', 'Illinois', 'America/Chicago'),
  ('US', 'IN', 'Indiana', 'America/Indiana/Indianapolis'), -- Eastern; the Gary and Evansville corners are Central
  ('US', 'IA', 'Iowa', 'America/Chicago'),
  ('US', 'KS', 'Kansas', 'America/Chicago'),
  ('US', 'KY', 'Kentucky', 'America/New_York'),            -- the western half is Central
  ('US', 'LA', 'Louisiana', 'America/Chicago'),
  ('US', 'ME', 'Maine', 'America/New_York'),
  ('US', 'MD', 'Maryland', 'America/New_York'),
  ('US', 'MA', 'Massachusetts', 'America/New_York'),
  ('US', 'MI', 'Michigan', 'America/Detroit'),             -- four Upper Peninsula counties are Central
  ('US', 'MN', 'Minnesota', 'America/Chicago'),
  ('US', 'MS', 'Mississippi', 'America/Chicago'),
  ('US', 'MO', 'Missouri', 'America/Chicago'),
  ('US', 'MT', 'Montana', 'America/Denver'),
  ('US', 'NE', 'Nebraska', 'America/Chicago'),             -- the western Panhandle is Mountain
  ('US', 'NV', 'Nevada', 'America/Los_Angeles'),
  ('US', 'NH', 'New Hampshire', 'America/New_York'),
  ('US', 'NJ', 'New Jersey', 'America/New_York'),
  ('US', 'NM', 'New Mexico', 'America/Denver'),
  ('US', 'NY', 'New York', 'America/New_York'),
  ('US', 'NC', 'North Carolina', 'America/New_York'),
  ('US', 'ND', 'North Dakota', 'America/Chicago'),         -- the southwest is Mountain
  ('US', 'OH', 'Ohio', 'America/New_York'),
  ('US', 'OK', 'Oklahoma', 'America/Chicago'),
  ('US', 'OR', 'Oregon', 'America/Los_Angeles'),           -- most of Malheur County is Mountain
  ('US', 'PA', 'Pennsylvania', 'America/New_York'),
  ('US', 'RI', 'Rhode Island', 'America/New_York'),
  ('US', 'SC', 'South Carolina', 'America/New_York'),
  ('US', 'SD', 'South Dakota', 'America/Chicago'),         -- West River (Rapid City) is Mountain
  ('US', 'TN', 'Tennessee', 'America/Chicago'),            -- East Tennessee (Knoxville, Chattanooga) is Eastern
  ('US', 'TX', 'Texas', 'America/Chicago'),                -- El Paso and Hudspeth counties are Mountain
  ('US', 'UT', 'Utah', 'America/Denver'),
  ('US', 'VT', 'Vermont', 'America/New_York'),
  ('US', 'VA', 'Virginia', 'America/New_York'),
  ('US', 'WA', 'Washington', 'America/Los_Angeles'),
  ('US', 'WV', 'West Virginia', 'America/New_York'),
  ('US', 'WI', 'Wisconsin', 'America/Chicago'),
  ('US', 'WY', 'Wyoming', 'America/Denver'),
  ('US', 'PR', 'Puerto Rico', 'America/Puerto_Rico'),      -- Atlantic time, no daylight saving
  ('US', 'VI', 'U.S. Virgin Islands', 'America/St_Thomas'),
  ('US', 'GU', 'Guam', 'Pacific/Guam'),
  ('US', 'MP', 'Northern Mariana Islands', 'Pacific/Saipan'),
  ('US', 'AS', 'American Samoa', 'Pacific/Pago_Pago'),
  ('CA', 'AB', 'Alberta', 'America/Edmonton'),
  ('CA', 'BC', 'British Columbia', 'America/Vancouver'),   -- the East Kootenay is Mountain, the Peace River region has no DST
  ('CA', 'MB', 'Manitoba', 'America/Winnipeg'),
  ('CA', 'NB', 'New Brunswick', 'America/Moncton'),        -- Atlantic time
  ('CA', 'NL', 'Newfoundland and Labrador', 'America/St_Johns'), -- most of Labrador is Atlantic (America/Goose_Bay)
  ('CA', 'NS', 'Nova Scotia', 'America/Halifax'),
  ('CA', 'NT', 'Northwest Territories', 'America/Edmonton'), -- America/Yellowknife is now an alias of America/Edmonton
  ('CA', 'NU', 'Nunavut', 'America/Iqaluit'),              -- Eastern (Qikiqtaaluk); Kivalliq is Central, Kitikmeot Mountain
  ('CA', 'ON', 'Ontario', 'America/Toronto'),              -- the far northwest (Kenora) is Central
  ('CA', 'PE', 'Prince Edward Island', 'America/Halifax'),
  ('CA', 'QC', 'Quebec', 'America/Toronto'),               -- the Magdalen Islands and the Lower North Shore are Atlantic
  ('CA', 'SK', 'Saskatchewan', 'America/Regina'),          -- Central Standard Time all year
  ('CA', 'YT', 'Yukon', 'America/Whitehorse');             -- UTC-7 all year since 2020

alter table app_public.region_timezones enable row level security;
alter table app_public.region_timezones force row level security;
create policy owner_all on app_public.region_timezones for all to :DATABASE_OWNER using (true) with check (true);
create policy select_all on app_public.region_timezones for select to :DATABASE_VISITOR using (true);
grant select on app_public.region_timezones to :DATABASE_VISITOR;

--------------------------------------------------------------------------------
-- Geographic NANP area codes of the US (with its territories) and Canada
--------------------------------------------------------------------------------
create table app_public.phone_area_codes (
  area_code text primary key,
  country text not null,
  region text not null,
  timezone text not null,
  constraint phone_area_codes_area_code_must_be_a_geographic_nanp_code check (
    area_code ~ '^[2-9][0-8][0-9]$'
    -- N11 service codes and the easily recognizable codes (N00, N22 … N88: 800, 833, 900, 500, 600, 700 …)
    and pg_catalog.substr(area_code, 2, 1) <> pg_catalog.substr(area_code, 3, 1)
    -- other non-geographic codes: inbound international, US government, personal communications (5XX)
    and area_code not in ('456', '710', '521', '522', '523', '524', '525', '526', '527', '528', '529', '532', '535', '538',
      '542', '543', '545', '546', '547', '549', '550', '552', '553', '554', '556', '558', '569', '578', '589')),
  constraint phone_area_codes_region_must_be_known foreign key (country, region) references app_public.region_timezones (country, region)
);
comment on table app_public.phone_area_codes is $$Reference data shared by every tenant (read-only): every geographic area code of the North American Numbering Plan in the United States (states, DC, PR, VI, GU, MP, AS) and Canada, with its state or province and its primary IANA time zone — primary zone per area code as of 2025; overlays included. Where an area code lies in another zone than its state's primary zone, the row carries the area code's own zone (e.g. 850, the Florida Panhandle, America/Chicago; 915, El Paso, America/Denver; 270, western Kentucky, America/Chicago; 423 and 865, East Tennessee, America/New_York). For an area code that straddles a zone line, the zone of most of its population. 902/782 serve Nova Scotia and Prince Edward Island and are filed under NS (same zone); 867 serves all three northern territories and is filed under NT (America/Edmonton, the middle of their three zones). Non-geographic codes (toll-free 8XX, 900, 5XX, 600, 700, 710 …) and the other NANP countries (the Caribbean nations) are not listed: for them the lookup finds nothing. Basis: NANPA and Canadian Numbering Administrator assignments (compiled by hand, checked against libphonenumber's list of valid area codes) and IANA tz database zone boundaries, as of 2025. A number keeps its area code when a person moves (mobile numbers above all), so this is a best guess, not an address.$$;
comment on column app_public.phone_area_codes.area_code is 'The three-digit area code (NPA), e.g. 212.';
comment on column app_public.phone_area_codes.country is 'US or CA (the US territories are filed under US, their region being PR, VI, GU, MP or AS).';
comment on column app_public.phone_area_codes.region is 'Postal code of the state, province or territory the area code serves (e.g. NY, ON).';
comment on column app_public.phone_area_codes.timezone is 'The IANA time zone of most of the area code''s people, e.g. America/New_York.';
create index phone_area_codes_by_region on app_public.phone_area_codes (country, region);

-- Rows are (area code, country, region, zone override); a null zone means the primary zone
-- of the region (region_timezones), so every exception to the zone of the state is visible here as a non-null value.
insert into app_public.phone_area_codes (area_code, country, region, timezone)
select v.area_code, v.country, v.region, coalesce(v.timezone, r.timezone)
from (values
  -- Alabama: Birmingham/Tuscaloosa 205/659, Huntsville/north 256/938, Montgomery/south-east 334, Mobile 251
  ('205', 'US', 'AL', null), ('251', 'US', 'AL', null), ('256', 'US', 'AL', null), ('334', 'US', 'AL', null),
  ('659', 'US', 'AL', null), ('938', 'US', 'AL', null),
  -- Alaska
  ('907', 'US', 'AK', null),
  -- Arizona (no daylight saving): Phoenix 602/480/623, Tucson/south 520, rest 928
  ('480', 'US', 'AZ', null), ('520', 'US', 'AZ', null), ('602', 'US', 'AZ', null), ('623', 'US', 'AZ', null),
  ('928', 'US', 'AZ', null),
  -- Arkansas: Little Rock 501, north-west 479, east/south 870/327
  ('327', 'US', 'AR', null), ('479', 'US', 'AR', null), ('501', 'US', 'AR', null), ('870', 'US', 'AR', null),
  -- California
  ('209', 'US', 'CA', null), ('213', 'US', 'CA', null), ('279', 'US', 'CA', null), ('310', 'US', 'CA', null),
  ('323', 'US', 'CA', null), ('341', 'US', 'CA', null), ('350', 'US', 'CA', null), ('369', 'US', 'CA', null),
  ('408', 'US', 'CA', null), ('415', 'US', 'CA', null), ('424', 'US', 'CA', null), ('442', 'US', 'CA', null),
  ('510', 'US', 'CA', null), ('530', 'US', 'CA', null), ('559', 'US', 'CA', null), ('562', 'US', 'CA', null),
  ('619', 'US', 'CA', null), ('626', 'US', 'CA', null), ('628', 'US', 'CA', null), ('650', 'US', 'CA', null),
  ('657', 'US', 'CA', null), ('661', 'US', 'CA', null), ('669', 'US', 'CA', null), ('707', 'US', 'CA', null),
  ('714', 'US', 'CA', null), ('738', 'US', 'CA', null), ('747', 'US', 'CA', null), ('760', 'US', 'CA', null),
  ('805', 'US', 'CA', null), ('818', 'US', 'CA', null), ('820', 'US', 'CA', null), ('831', 'US', 'CA', null),
  ('840', 'US', 'CA', null), ('858', 'US', 'CA', null), ('909', 'US', 'CA', null), ('916', 'US', 'CA', null),
  ('925', 'US', 'CA', null), ('949', 'US', 'CA', null), ('951', 'US', 'CA', null),
  -- Colorado: Denver/Boulder 303/720/983/748, south 719, west/north 970
  ('303', 'US', 'CO', null), ('719', 'US', 'CO', null), ('720', 'US', 'CO', null), ('748', 'US', 'CO', null),
  ('970', 'US', 'CO', null), ('983', 'US', 'CO', null),
  -- Connecticut
  ('203', 'US', 'CT', null), ('475', 'US', 'CT', null), ('860', 'US', 'CT', null), ('959', 'US', 'CT', null),
  -- Delaware
  ('302', 'US', 'DE', null),
  -- District of Columbia
  ('202', 'US', 'DC', null), ('771', 'US', 'DC', null),
  -- Florida: Eastern time except the western Panhandle (850/448: Pensacola, Panama City, Fort Walton Beach —
  -- Central; Tallahassee in the same area code is Eastern, but most people of the area code are Central)
  ('239', 'US', 'FL', null), ('305', 'US', 'FL', null), ('321', 'US', 'FL', null), ('324', 'US', 'FL', null),
  ('352', 'US', 'FL', null), ('386', 'US', 'FL', null), ('407', 'US', 'FL', null), ('448', 'US', 'FL', 'America/Chicago'),
  ('561', 'US', 'FL', null), ('645', 'US', 'FL', null), ('656', 'US', 'FL', null), ('689', 'US', 'FL', null),
  ('727', 'US', 'FL', null), ('728', 'US', 'FL', null), ('754', 'US', 'FL', null), ('772', 'US', 'FL', null),
  ('786', 'US', 'FL', null), ('813', 'US', 'FL', null), ('850', 'US', 'FL', 'America/Chicago'), ('863', 'US', 'FL', null),
  ('904', 'US', 'FL', null), ('941', 'US', 'FL', null), ('954', 'US', 'FL', null),
  -- Georgia: Atlanta 404/470/678/770/943
  ('229', 'US', 'GA', null), ('404', 'US', 'GA', null), ('470', 'US', 'GA', null), ('478', 'US', 'GA', null),
  ('678', 'US', 'GA', null), ('706', 'US', 'GA', null), ('762', 'US', 'GA', null), ('770', 'US', 'GA', null),
  ('912', 'US', 'GA', null), ('943', 'US', 'GA', null),
  -- Hawaii
  ('808', 'US', 'HI', null),
  -- Idaho: one area code complex for the state (America/Boise; the northern Panhandle is Pacific)
  ('208', 'US', 'ID', null), ('986', 'US', 'ID', null),
  -- Illinois: Chicago 312/773/872, suburbs 224/847, 630/331, 708/464, 815/779; downstate 217/447, 309, 618/730
  ('217', 'US', 'IL', null), ('224', 'US', 'IL', null), ('309', 'US', 'IL', null), ('312', 'US', 'IL', null),
  ('331', 'US', 'IL', null), ('447', 'US', 'IL', null), ('464', 'US', 'IL', null), ('618', 'US', 'IL', null),
  ('630', 'US', 'IL', null), ('708', 'US', 'IL', null), ('730', 'US', 'IL', null), ('773', 'US', 'IL', null),
  ('779', 'US', 'IL', null), ('815', 'US', 'IL', null), ('847', 'US', 'IL', null), ('872', 'US', 'IL', null),
  -- Indiana: Eastern, except 219 (Gary and the Chicago suburbs of north-west Indiana: Central).
  -- 812/930 (south) is mostly Eastern; its Evansville corner is Central.
  ('219', 'US', 'IN', 'America/Chicago'), ('260', 'US', 'IN', null), ('317', 'US', 'IN', null), ('463', 'US', 'IN', null),
  ('574', 'US', 'IN', null), ('765', 'US', 'IN', null), ('812', 'US', 'IN', null), ('930', 'US', 'IN', null),
  -- Iowa
  ('319', 'US', 'IA', null), ('515', 'US', 'IA', null), ('563', 'US', 'IA', null), ('641', 'US', 'IA', null),
  ('712', 'US', 'IA', null),
  -- Kansas (a few western counties are Mountain)
  ('316', 'US', 'KS', null), ('620', 'US', 'KS', null), ('785', 'US', 'KS', null), ('913', 'US', 'KS', null),
  -- Kentucky: western Kentucky 270/364 (Bowling Green, Owensboro, Paducah) is Central; Louisville 502 has its own
  -- IANA zone (same clock as New York); Lexington/northern 859 and eastern 606 are Eastern
  ('270', 'US', 'KY', 'America/Chicago'), ('364', 'US', 'KY', 'America/Chicago'),
  ('502', 'US', 'KY', 'America/Kentucky/Louisville'), ('606', 'US', 'KY', null), ('859', 'US', 'KY', null),
  -- Louisiana
  ('225', 'US', 'LA', null), ('318', 'US', 'LA', null), ('337', 'US', 'LA', null), ('504', 'US', 'LA', null),
  ('985', 'US', 'LA', null),
  -- Maine
  ('207', 'US', 'ME', null),
  -- Maryland
  ('227', 'US', 'MD', null), ('240', 'US', 'MD', null), ('301', 'US', 'MD', null), ('410', 'US', 'MD', null),
  ('443', 'US', 'MD', null), ('667', 'US', 'MD', null),
  -- Massachusetts
  ('339', 'US', 'MA', null), ('351', 'US', 'MA', null), ('413', 'US', 'MA', null), ('508', 'US', 'MA', null),
  ('617', 'US', 'MA', null), ('774', 'US', 'MA', null), ('781', 'US', 'MA', null), ('857', 'US', 'MA', null),
  ('978', 'US', 'MA', null),
  -- Michigan (906, the Upper Peninsula, is mostly Eastern)
  ('231', 'US', 'MI', null), ('248', 'US', 'MI', null), ('269', 'US', 'MI', null), ('313', 'US', 'MI', null),
  ('517', 'US', 'MI', null), ('586', 'US', 'MI', null), ('616', 'US', 'MI', null), ('734', 'US', 'MI', null),
  ('810', 'US', 'MI', null), ('906', 'US', 'MI', null), ('947', 'US', 'MI', null), ('989', 'US', 'MI', null),
  -- Minnesota
  ('218', 'US', 'MN', null), ('320', 'US', 'MN', null), ('507', 'US', 'MN', null), ('612', 'US', 'MN', null),
  ('651', 'US', 'MN', null), ('763', 'US', 'MN', null), ('952', 'US', 'MN', null),
  -- Mississippi
  ('228', 'US', 'MS', null), ('601', 'US', 'MS', null), ('662', 'US', 'MS', null), ('769', 'US', 'MS', null),
  -- Missouri: St. Louis 314/557, suburbs 636, Kansas City 816/975, Springfield 417, 573/235, 660
  ('235', 'US', 'MO', null), ('314', 'US', 'MO', null), ('417', 'US', 'MO', null), ('557', 'US', 'MO', null),
  ('573', 'US', 'MO', null), ('636', 'US', 'MO', null), ('660', 'US', 'MO', null), ('816', 'US', 'MO', null),
  ('975', 'US', 'MO', null),
  -- Montana
  ('406', 'US', 'MT', null),
  -- Nebraska: 308 (west) is mostly Central (Grand Island, Kearney, North Platte); the Panhandle is Mountain
  ('308', 'US', 'NE', null), ('402', 'US', 'NE', null), ('531', 'US', 'NE', null),
  -- Nevada: Las Vegas 702/725, rest 775
  ('702', 'US', 'NV', null), ('725', 'US', 'NV', null), ('775', 'US', 'NV', null),
  -- New Hampshire
  ('603', 'US', 'NH', null),
  -- New Jersey
  ('201', 'US', 'NJ', null), ('551', 'US', 'NJ', null), ('609', 'US', 'NJ', null), ('640', 'US', 'NJ', null),
  ('732', 'US', 'NJ', null), ('848', 'US', 'NJ', null), ('856', 'US', 'NJ', null), ('862', 'US', 'NJ', null),
  ('908', 'US', 'NJ', null), ('973', 'US', 'NJ', null),
  -- New Mexico
  ('505', 'US', 'NM', null), ('575', 'US', 'NM', null),
  -- New York: NYC 212/646/332/917 (Manhattan), 718/347/929; Long Island 516/363, 631/934; upstate 315/680,
  -- 518/838, 585, 607, 716/624, 845/329, 914
  ('212', 'US', 'NY', null), ('315', 'US', 'NY', null), ('329', 'US', 'NY', null), ('332', 'US', 'NY', null),
  ('347', 'US', 'NY', null), ('363', 'US', 'NY', null), ('516', 'US', 'NY', null), ('518', 'US', 'NY', null),
  ('585', 'US', 'NY', null), ('607', 'US', 'NY', null), ('624', 'US', 'NY', null), ('631', 'US', 'NY', null),
  ('646', 'US', 'NY', null), ('680', 'US', 'NY', null), ('716', 'US', 'NY', null), ('718', 'US', 'NY', null),
  ('838', 'US', 'NY', null), ('845', 'US', 'NY', null), ('914', 'US', 'NY', null), ('917', 'US', 'NY', null),
  ('929', 'US', 'NY', null), ('934', 'US', 'NY', null),
  -- North Carolina
  ('252', 'US', 'NC', null), ('336', 'US', 'NC', null), ('472', 'US', 'NC', null), ('704', 'US', 'NC', null),
  ('743', 'US', 'NC', null), ('828', 'US', 'NC', null), ('910', 'US', 'NC', null), ('919', 'US', 'NC', null),
  ('980', 'US', 'NC', null), ('984', 'US', 'NC', null),
  -- North Dakota (the south-west is Mountain)
  ('701', 'US', 'ND', null),
  -- Ohio
  ('216', 'US', 'OH', null), ('220', 'US', 'OH', null), ('234', 'US', 'OH', null), ('283', 'US', 'OH', null),
  ('326', 'US', 'OH', null), ('330', 'US', 'OH', null), ('380', 'US', 'OH', null), ('419', 'US', 'OH', null),
  ('440', 'US', 'OH', null), ('513', 'US', 'OH', null), ('567', 'US', 'OH', null), ('614', 'US', 'OH', null),
  ('740', 'US', 'OH', null), ('937', 'US', 'OH', null),
  -- Oklahoma
  ('405', 'US', 'OK', null), ('539', 'US', 'OK', null), ('572', 'US', 'OK', null), ('580', 'US', 'OK', null),
  ('918', 'US', 'OK', null),
  -- Oregon (541/458 include Malheur County, Mountain time, a small minority)
  ('458', 'US', 'OR', null), ('503', 'US', 'OR', null), ('541', 'US', 'OR', null), ('971', 'US', 'OR', null),
  -- Pennsylvania
  ('215', 'US', 'PA', null), ('223', 'US', 'PA', null), ('267', 'US', 'PA', null), ('272', 'US', 'PA', null),
  ('412', 'US', 'PA', null), ('445', 'US', 'PA', null), ('484', 'US', 'PA', null), ('570', 'US', 'PA', null),
  ('582', 'US', 'PA', null), ('610', 'US', 'PA', null), ('717', 'US', 'PA', null), ('724', 'US', 'PA', null),
  ('814', 'US', 'PA', null), ('835', 'US', 'PA', null), ('878', 'US', 'PA', null),
  -- Rhode Island
  ('401', 'US', 'RI', null),
  -- South Carolina
  ('803', 'US', 'SC', null), ('821', 'US', 'SC', null), ('839', 'US', 'SC', null), ('843', 'US', 'SC', null),
  ('854', 'US', 'SC', null), ('864', 'US', 'SC', null),
  -- South Dakota (one area code; West River, about a quarter of the people, is Mountain)
  ('605', 'US', 'SD', null),
  -- Tennessee: Central, except East Tennessee — 423 (Chattanooga, Tri-Cities) and 865 (Knoxville) are Eastern
  ('423', 'US', 'TN', 'America/New_York'), ('615', 'US', 'TN', null), ('629', 'US', 'TN', null), ('731', 'US', 'TN', null),
  ('865', 'US', 'TN', 'America/New_York'), ('901', 'US', 'TN', null), ('931', 'US', 'TN', null),
  -- Texas: Central, except 915 (El Paso: Mountain)
  ('210', 'US', 'TX', null), ('214', 'US', 'TX', null), ('254', 'US', 'TX', null), ('281', 'US', 'TX', null),
  ('325', 'US', 'TX', null), ('346', 'US', 'TX', null), ('361', 'US', 'TX', null), ('409', 'US', 'TX', null),
  ('430', 'US', 'TX', null), ('432', 'US', 'TX', null), ('469', 'US', 'TX', null), ('512', 'US', 'TX', null),
  ('682', 'US', 'TX', null), ('713', 'US', 'TX', null), ('726', 'US', 'TX', null), ('737', 'US', 'TX', null),
  ('806', 'US', 'TX', null), ('817', 'US', 'TX', null), ('830', 'US', 'TX', null), ('832', 'US', 'TX', null),
  ('903', 'US', 'TX', null), ('915', 'US', 'TX', 'America/Denver'), ('936', 'US', 'TX', null), ('940', 'US', 'TX', null),
  ('945', 'US', 'TX', null), ('956', 'US', 'TX', null), ('972', 'US', 'TX', null), ('979', 'US', 'TX', null),
  -- Utah
  ('385', 'US', 'UT', null), ('435', 'US', 'UT', null), ('801', 'US', 'UT', null),
  -- Vermont
  ('802', 'US', 'VT', null),
  -- Virginia
  ('276', 'US', 'VA', null), ('434', 'US', 'VA', null), ('540', 'US', 'VA', null), ('571', 'US', 'VA', null),
  ('686', 'US', 'VA', null), ('703', 'US', 'VA', null), ('757', 'US', 'VA', null), ('804', 'US', 'VA', null),
  ('826', 'US', 'VA', null), ('948', 'US', 'VA', null),
  -- Washington
  ('206', 'US', 'WA', null), ('253', 'US', 'WA', null), ('360', 'US', 'WA', null), ('425', 'US', 'WA', null),
  ('509', 'US', 'WA', null), ('564', 'US', 'WA', null),
  -- West Virginia
  ('304', 'US', 'WV', null), ('681', 'US', 'WV', null),
  -- Wisconsin
  ('262', 'US', 'WI', null), ('274', 'US', 'WI', null), ('353', 'US', 'WI', null), ('414', 'US', 'WI', null),
  ('534', 'US', 'WI', null), ('608', 'US', 'WI', null), ('715', 'US', 'WI', null), ('920', 'US', 'WI', null),
  -- Wyoming
  ('307', 'US', 'WY', null),
  -- US territories
  ('787', 'US', 'PR', null), ('939', 'US', 'PR', null),
  ('340', 'US', 'VI', null),
  ('671', 'US', 'GU', null),
  ('670', 'US', 'MP', null),
  ('684', 'US', 'AS', null),
  -- Alberta
  ('368', 'CA', 'AB', null), ('403', 'CA', 'AB', null), ('587', 'CA', 'AB', null), ('780', 'CA', 'AB', null),
  ('825', 'CA', 'AB', null),
  -- British Columbia: Lower Mainland 604, rest 250, province-wide overlays 778/236/672/257
  ('236', 'CA', 'BC', null), ('250', 'CA', 'BC', null), ('257', 'CA', 'BC', null), ('604', 'CA', 'BC', null),
  ('672', 'CA', 'BC', null), ('778', 'CA', 'BC', null),
  -- Manitoba
  ('204', 'CA', 'MB', null), ('431', 'CA', 'MB', null), ('584', 'CA', 'MB', null),
  -- New Brunswick
  ('428', 'CA', 'NB', null), ('506', 'CA', 'NB', null),
  -- Newfoundland and Labrador
  ('709', 'CA', 'NL', null), ('879', 'CA', 'NL', null),
  -- Nova Scotia and Prince Edward Island (one area code complex for both; filed under NS, same zone as PE)
  ('782', 'CA', 'NS', null), ('902', 'CA', 'NS', null),
  -- Yukon, Northwest Territories and Nunavut share 867: filed under NT and its zone (America/Edmonton),
  -- the middle one between Yukon (UTC-7 all year) and Nunavut (mostly Eastern)
  ('867', 'CA', 'NT', null),
  -- Ontario: Toronto 416/647/437/942; around Toronto 905/289/365/742; Ottawa/east 613/343/753;
  -- south-west 519/226/548/382; centre/north-east 705/249/683; north-west 807 (Thunder Bay: Eastern)
  ('226', 'CA', 'ON', null), ('249', 'CA', 'ON', null), ('289', 'CA', 'ON', null), ('343', 'CA', 'ON', null),
  ('365', 'CA', 'ON', null), ('382', 'CA', 'ON', null), ('416', 'CA', 'ON', null), ('437', 'CA', 'ON', null),
  ('519', 'CA', 'ON', null), ('548', 'CA', 'ON', null), ('613', 'CA', 'ON', null), ('647', 'CA', 'ON', null),
  ('683', 'CA', 'ON', null), ('705', 'CA', 'ON', null), ('742', 'CA', 'ON', null), ('753', 'CA', 'ON', null),
  ('807', 'CA', 'ON', null), ('905', 'CA', 'ON', null), ('942', 'CA', 'ON', null),
  -- Quebec: Montreal 514/438/263; around Montreal 450/579/354; east (Quebec City) 418/581/367; west 819/873/468
  ('263', 'CA', 'QC', null), ('354', 'CA', 'QC', null), ('367', 'CA', 'QC', null), ('418', 'CA', 'QC', null),
  ('438', 'CA', 'QC', null), ('450', 'CA', 'QC', null), ('468', 'CA', 'QC', null), ('514', 'CA', 'QC', null),
  ('579', 'CA', 'QC', null), ('581', 'CA', 'QC', null), ('819', 'CA', 'QC', null), ('873', 'CA', 'QC', null),
  -- Saskatchewan
  ('306', 'CA', 'SK', null), ('474', 'CA', 'SK', null), ('639', 'CA', 'SK', null)
) as v (area_code, country, region, timezone)
left join app_public.region_timezones r on r.country = v.country and r.region = v.region;

alter table app_public.phone_area_codes enable row level security;
alter table app_public.phone_area_codes force row level security;
create policy owner_all on app_public.phone_area_codes for all to :DATABASE_OWNER using (true) with check (true);
create policy select_all on app_public.phone_area_codes for select to :DATABASE_VISITOR using (true);
grant select on app_public.phone_area_codes to :DATABASE_VISITOR;

-- The migration fails unless every zone is one this server knows and the tables are complete.
do $$
declare
  v_bad text;
begin
  select pg_catalog.string_agg(distinct z.timezone, ', ') into v_bad
  from (select timezone from app_public.region_timezones union all select timezone from app_public.phone_area_codes) z
  where not exists (select 1 from pg_catalog.pg_timezone_names n where n.name = z.timezone);
  if v_bad is not null then
    raise exception 'Geo reference data: unknown time zone(s) %', v_bad;
  end if;
  -- 50 states + DC + 5 territories, 13 provinces and territories.
  if (select pg_catalog.count(*) from app_public.region_timezones where country = 'US') <> 56
     or (select pg_catalog.count(*) from app_public.region_timezones where country = 'CA') <> 13 then
    raise exception 'Geo reference data: region_timezones must list 56 US and 13 Canadian regions';
  end if;
  -- Every region has an area code, except PE (902/782, filed under NS) and YT/NU (867, filed under NT).
  select pg_catalog.string_agg(r.country || '-' || r.region, ', ') into v_bad
  from app_public.region_timezones r
  where r.region not in ('PE', 'YT', 'NU')
    and not exists (select 1 from app_public.phone_area_codes a where a.country = r.country and a.region = r.region);
  if v_bad is not null then
    raise exception 'Geo reference data: no area code for %', v_bad;
  end if;
  if (select pg_catalog.count(*) from app_public.phone_area_codes) < 400 then
    raise exception 'Geo reference data: fewer area codes than expected';
  end if;
end;
$$;

--------------------------------------------------------------------------------
-- Lookups
--------------------------------------------------------------------------------
create function app_public.phone_region(phone text) returns app_public.phone_area_codes
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select a.*
  from app_public.phone_area_codes a
  where a.area_code = pg_catalog.substring(
    pg_catalog.regexp_replace(phone_region.phone, '[[:space:]().-]', '', 'g'), '^\+1([2-9][0-9]{2})[0-9]{7}$');
$$;
comment on function app_public.phone_region(text) is $$The area code row (state or province, country, time zone) of a North American number in E.164 form (+1 and 10 digits; spaces, dots, dashes and parentheses are ignored, e.g. "+1 (305) 555-0100"). Null for numbers outside +1, for non-geographic codes (toll-free 8XX, 900, 5XX …) and for the other NANP countries (the Caribbean nations).$$;

create function app_public.timezone_for_phone(phone text) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select (app_public.phone_region(timezone_for_phone.phone)).timezone;
$$;
comment on function app_public.timezone_for_phone(text) is 'The IANA time zone of a North American number''s area code (e.g. "+13055550100" gives America/New_York, "+18505550100" America/Chicago); null when the area code is not a known geographic one or the number is not +1.';

create function app_public.timezone_for_region(country text, region text) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select r.timezone
  from app_public.region_timezones r
  where case
    -- A US territory given as the country (ISO 3166-1 PR, VI, GU, MP, AS): the territory is the region.
    when pg_catalog.upper(pg_catalog.btrim(timezone_for_region.country)) in ('PR', 'VI', 'GU', 'MP', 'AS')
      then r.country = 'US' and r.region = pg_catalog.upper(pg_catalog.btrim(timezone_for_region.country))
    else r.country = pg_catalog.upper(pg_catalog.btrim(timezone_for_region.country))
      and (pg_catalog.upper(pg_catalog.btrim(timezone_for_region.region)) in (r.region, r.country || '-' || r.region)
           or pg_catalog.lower(pg_catalog.btrim(timezone_for_region.region)) = pg_catalog.lower(r.name))
  end;
$$;
comment on function app_public.timezone_for_region(text, text) is $$The primary IANA time zone of a US state, DC, US territory or Canadian province/territory. The region may be given as its postal code ("FL"), ISO 3166-2 code ("US-FL") or English name ("Florida"), in any case; a territory may also be given as the country ("PR"). Null when unknown.$$;

--------------------------------------------------------------------------------
-- Leads: derive timezone (and region/country) when not given
--------------------------------------------------------------------------------
create function app_private.lead_default_timezone(tenant_id uuid, phone text, country text, region text) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(
    app_public.timezone_for_phone(lead_default_timezone.phone),
    app_public.timezone_for_region(lead_default_timezone.country, lead_default_timezone.region),
    (select s.timezone from app_public.business_settings s where s.tenant_id = lead_default_timezone.tenant_id));
$$;
comment on function app_private.lead_default_timezone(uuid, text, text, text) is 'The time zone a lead gets when none is given: its phone''s area code zone if known, else its region''s zone (region_timezones), else the tenant''s business_settings.timezone. Called by the leads trigger, which runs as the owner (it reads the tenant''s settings explicitly by tenant_id).';

create function app_private.tg_leads__derive_timezone() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_area app_public.phone_area_codes;
  v_old_area app_public.phone_area_codes;
begin
  -- A blank value means not given.
  NEW.timezone := nullif(pg_catalog.btrim(NEW.timezone), '');
  if pg_catalog.btrim(NEW.region) = '' then
    NEW.region := null;
  end if;

  if TG_OP = 'UPDATE' then
    if NEW.phone is not distinct from OLD.phone and NEW.timezone is not distinct from OLD.timezone
       and NEW.region is not distinct from OLD.region and NEW.country is not distinct from OLD.country then
      return NEW;
    end if;
    -- Derived values follow their source: a region/country that came from the area code of the old number, and a
    -- time zone equal to what the old values gave, are derived again from the new values unless this
    -- statement sets them too.
    if NEW.phone is distinct from OLD.phone and NEW.region is not distinct from OLD.region
       and NEW.country is not distinct from OLD.country then
      v_old_area := app_public.phone_region(OLD.phone);
      if v_old_area.area_code is not null and OLD.region = v_old_area.region and OLD.country = v_old_area.country then
        NEW.region := null;
      end if;
    end if;
    if NEW.timezone is not null and NEW.timezone is not distinct from OLD.timezone
       and OLD.timezone = app_private.lead_default_timezone(OLD.tenant_id, OLD.phone, OLD.country, OLD.region) then
      NEW.timezone := null;
    end if;
  end if;

  v_area := app_public.phone_region(NEW.phone);
  if NEW.region is null and v_area.area_code is not null then
    NEW.region := v_area.region;
    NEW.country := v_area.country;
  end if;

  if NEW.timezone is null then
    NEW.timezone := coalesce(v_area.timezone,
      app_private.lead_default_timezone(NEW.tenant_id, null, NEW.country, NEW.region));
  elsif TG_OP = 'INSERT' or NEW.timezone is distinct from OLD.timezone then
    -- An explicit zone is kept but must be a real IANA name. The reference zones (checked by the migration)
    -- and the tenant zone (checked by business_settings) are known to be valid; anything else goes through
    -- the validator, which reads pg_timezone_names (slow: tens of milliseconds).
    if not exists (select 1 from app_public.region_timezones r where r.timezone = NEW.timezone)
       and not exists (select 1 from app_public.phone_area_codes a where a.timezone = NEW.timezone)
       and not exists (select 1 from app_public.business_settings s where s.tenant_id = NEW.tenant_id and s.timezone = NEW.timezone) then
      perform app_private.validate_timezone(NEW.timezone);
    end if;
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_leads__derive_timezone() is $$Trigger (_050_derive_timezone, before insert or update of phone, timezone, region, country on leads). When the lead has no timezone: the phone's area code zone (phone_area_codes) if known, else its region's zone (region_timezones, by country and region), else the tenant's business_settings.timezone. When it has no region and the phone is a known North American number: region and country from the area code. An explicit timezone is kept but must be a known IANA name (22023 "Unknown timezone 'X' …", checked only when it changes); a blank one counts as not given. On update, values that were derived from the old phone (or old region) are derived again when the phone (or region) changes, unless the same statement sets them. SECURITY DEFINER so that it can read the tenant's settings whoever writes the lead; it reads only the row's own tenant, and the row-level security of leads still decides whether the write is allowed.$$;

create trigger _050_derive_timezone before insert or update of phone, timezone, region, country on app_public.leads
  for each row execute function app_private.tg_leads__derive_timezone();

grant execute on function
  app_public.phone_region(text),
  app_public.timezone_for_phone(text),
  app_public.timezone_for_region(text, text)
to :DATABASE_VISITOR;

--! split: 020-history.sql
--------------------------------------------------------------------------------
-- Lead history: the generic audit trigger, status/score/assignment histories,
-- duplicate phones, soft delete, the do-not-contact list and the lead timeline.
-- Built on the tables of 010-leads.sql. Idempotent: drops exactly what it creates
-- (010 recreates leads and dnc_list on every run, which drops their triggers and the
-- functions that take or return the leads row type; they are recreated here).
--
-- Request settings read here (all optional, set with set_config(name, value, true)):
--   app.change_source        manual | import | automation | routing | webhook | system
--   app.change_reason        why (goes into audit tables that have a reason column)
--   app.assignment_strategy  one of lead_assignments_strategy_must_be_known's values
--   app.assignment_reason    why the owner changed
--------------------------------------------------------------------------------

drop function if exists app_public.lead_timeline(uuid);
drop type if exists app_public.lead_timeline_event cascade;
drop function if exists app_hidden.lead_timeline_value(jsonb);
drop function if exists app_hidden.lead_timeline_member_name(uuid, uuid);
drop function if exists app_public.remove_from_dnc_list(text, text);
drop function if exists app_public.is_on_dnc_list(text, uuid);
drop function if exists app_public.restore_lead(uuid);
drop function if exists app_public.delete_lead(uuid);
drop function if exists app_public.reassign_lead(uuid, uuid, text);
drop function if exists app_private.require_manager(text);
drop function if exists app_private.tg_leads__add_to_dnc_list() cascade;
drop function if exists app_private.tg_leads__phone_must_be_unique() cascade;
drop function if exists app_private.tg_leads__assignment_history() cascade;
drop function if exists app_private.tg_leads__score_history() cascade;
drop function if exists app_private.tg_leads__status_history() cascade;
drop function if exists app_private.tg__audit_changes() cascade;
drop function if exists app_private.assignment_strategy(uuid, uuid);
drop function if exists app_private.change_source(uuid, uuid);
drop table if exists app_public.dnc_audit_log cascade;

--------------------------------------------------------------------------------
-- Who and through what: shared by every history trigger.
--------------------------------------------------------------------------------

create function app_private.change_source(actor_user_id uuid, actor_api_key_id uuid) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select case
    when pg_catalog.current_setting('app.change_source', true) in ('manual', 'import', 'automation', 'routing', 'webhook', 'system')
      then pg_catalog.current_setting('app.change_source', true)
    when actor_user_id is not null or actor_api_key_id is not null then 'manual'
    else 'system'
  end;
$$;
comment on function app_private.change_source(uuid, uuid) is 'Through what the current change comes: the setting app.change_source when it is manual, import, automation, routing, webhook or system; otherwise manual when a user or an API key (the actors passed in) is acting, else system.';

create function app_private.assignment_strategy(actor_user_id uuid, actor_api_key_id uuid) returns text
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_strategy text := nullif(pg_catalog.btrim(pg_catalog.current_setting('app.assignment_strategy', true)), '');
  v_allowed text[];
begin
  if v_strategy is null then
    return case when actor_user_id is not null or actor_api_key_id is not null then 'manual' else 'system' end;
  end if;
  -- The allowed values are read from the table's check constraint, so extending that list is enough.
  select pg_catalog.array_agg(m[1]) into v_allowed
  from pg_catalog.pg_constraint c,
       pg_catalog.regexp_matches(pg_catalog.pg_get_constraintdef(c.oid), '''([^'']*)''', 'g') m
  where c.conrelid = 'app_public.lead_assignments'::regclass
    and c.conname = 'lead_assignments_strategy_must_be_known';
  if v_allowed is not null and not (v_strategy = any (v_allowed)) then
    raise exception 'Invalid assignment strategy ''%'' (setting app.assignment_strategy): use one of %',
      v_strategy, pg_catalog.array_to_string(v_allowed, ', ')
      using errcode = '22023';
  end if;
  return v_strategy;
end;
$$;
comment on function app_private.assignment_strategy(uuid, uuid) is 'The strategy to record for an owner change: the setting app.assignment_strategy, checked against the values allowed by lead_assignments_strategy_must_be_known (22023 otherwise); when it is not set, manual if a user or an API key (the actors passed in) is acting, else system.';

--------------------------------------------------------------------------------
-- Do-not-contact audit log
--------------------------------------------------------------------------------

create table app_public.dnc_audit_log (
  -- "by default", not "always": with "always", an UPDATE of id fails with 428C9 before the privilege
  -- check, where the isolation test expects 42501. Requests can't insert here at all.
  id bigint generated by default as identity primary key,
  tenant_id uuid not null,
  dnc_entry_id uuid not null,
  phone app_public.e164_phone not null,
  field_name text not null,
  old_value jsonb,
  new_value jsonb,
  changed_by_user_id uuid,
  changed_by_api_key_id uuid,
  change_source text not null,
  reason text,
  changed_at timestamptz not null default now(),
  constraint dnc_audit_log_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint dnc_audit_log_change_source_must_be_known check (change_source in ('manual', 'import', 'automation', 'routing', 'webhook', 'system'))
);
comment on table app_public.dnc_audit_log is $$Everything that happened to the tenant's do-not-contact list: numbers added ("*created*"), changed (one row per field) and removed ("*deleted*", with the reason given to remove_from_dnc_list). Kept after the entry itself is gone. Written by the generic audit trigger; read-only for members.
@behavior -insert -update -delete$$;
comment on column app_public.dnc_audit_log.id is 'Sequence number of the change.';
comment on column app_public.dnc_audit_log.tenant_id is 'The tenant whose list changed.';
comment on column app_public.dnc_audit_log.dnc_entry_id is 'The id of the list entry (no reference: removed entries are gone, their history stays).';
comment on column app_public.dnc_audit_log.phone is 'The number concerned (E.164).';
comment on column app_public.dnc_audit_log.field_name is 'The field that changed, or "*created*" (added to the list) / "*deleted*" (removed from the list).';
comment on column app_public.dnc_audit_log.old_value is 'The value before the change, as JSON (the whole entry when it was removed).';
comment on column app_public.dnc_audit_log.new_value is 'The value after the change, as JSON (the whole entry when it was added).';
comment on column app_public.dnc_audit_log.changed_by_user_id is 'The user who made the change, if a user did.';
comment on column app_public.dnc_audit_log.changed_by_api_key_id is 'The API key that made the change, if one did.';
comment on column app_public.dnc_audit_log.change_source is 'Through what the change came: manual, import, automation, routing, webhook or system.';
comment on column app_public.dnc_audit_log.reason is 'Why: the reason given for a removal, else the entry''s own reason.';
comment on column app_public.dnc_audit_log.changed_at is 'When the change happened.';
create index dnc_audit_log_by_phone on app_public.dnc_audit_log (tenant_id, phone, changed_at);
create index dnc_audit_log_by_entry on app_public.dnc_audit_log (tenant_id, dnc_entry_id);

alter table app_public.dnc_audit_log enable row level security;
alter table app_public.dnc_audit_log force row level security;
create policy owner_all on app_public.dnc_audit_log for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.dnc_audit_log for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.dnc_audit_log to :DATABASE_VISITOR;

--------------------------------------------------------------------------------
-- The generic audit trigger
--------------------------------------------------------------------------------

create function app_private.tg__audit_changes() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  -- Trigger arguments are fixed by the DDL that attaches this function, never user input.
  v_audit_table regclass := TG_ARGV[0]::regclass;
  v_entity_column text := TG_ARGV[1];
  v_ignored text[] := coalesce(TG_ARGV[2:], '{}');
  v_old_row jsonb;
  v_new_row jsonb;
  v_row jsonb;
  v_user_id uuid;
  v_api_key_id uuid;
  v_changes jsonb;
  v_common jsonb;
  v_columns text[] := array['tenant_id', v_entity_column, 'field_name', 'old_value', 'new_value',
    'changed_by_user_id', 'changed_by_api_key_id', 'change_source', 'changed_at'];
  v_column text;
  v_column_list text;
begin
  if TG_OP in ('UPDATE', 'DELETE') then
    v_old_row := pg_catalog.to_jsonb(OLD);
  end if;
  if TG_OP in ('INSERT', 'UPDATE') then
    v_new_row := pg_catalog.to_jsonb(NEW);
  end if;
  v_row := coalesce(v_new_row, v_old_row);

  if TG_OP = 'DELETE' then
    -- An audit table that references the audited table loses this row's history with it
    -- (on delete cascade), and a tenant being deleted takes everything: nothing to write.
    if exists (
      select 1 from pg_catalog.pg_constraint c
      where c.conrelid = v_audit_table and c.contype = 'f' and c.confrelid = TG_RELID
    ) then
      return null;
    end if;
    if v_row ? 'tenant_id' and not exists (
      select 1 from app_public.tenants t where t.id = (v_row ->> 'tenant_id')::uuid
    ) then
      return null;
    end if;
  end if;

  if TG_OP = 'INSERT' then
    v_changes := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
      'field_name', '*created*', 'old_value', null, 'new_value', v_new_row - v_ignored));
  elsif TG_OP = 'DELETE' then
    v_changes := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
      'field_name', '*deleted*', 'old_value', v_old_row - v_ignored, 'new_value', null));
  else
    -- One row per changed column, in column order.
    select pg_catalog.jsonb_agg(
             pg_catalog.jsonb_build_object('field_name', n.key, 'old_value', o.value, 'new_value', n.value)
             order by a.attnum)
      into v_changes
    from pg_catalog.jsonb_each(v_new_row - v_ignored) n
    join pg_catalog.jsonb_each(v_old_row - v_ignored) o on o.key = n.key
    join pg_catalog.pg_attribute a on a.attrelid = TG_RELID and a.attname = n.key
    where o.value is distinct from n.value;
    if v_changes is null then
      return null;
    end if;
  end if;

  v_user_id := app_public.current_user_id();
  v_api_key_id := app_public.current_api_key_id();
  v_common := pg_catalog.jsonb_build_object(
    'tenant_id', v_row -> 'tenant_id',
    v_entity_column, v_row -> 'id',
    'changed_by_user_id', v_user_id,
    'changed_by_api_key_id', v_api_key_id,
    'change_source', app_private.change_source(v_user_id, v_api_key_id),
    -- clock_timestamp(), not now(): several changes in one transaction keep their real order.
    'changed_at', pg_catalog.clock_timestamp()
  );

  -- Extra columns of the audit table (e.g. dnc_audit_log.phone, .reason) are filled from the
  -- row's column of the same name; "reason" prefers the setting app.change_reason.
  for v_column in
    select a.attname::text
    from pg_catalog.pg_attribute a
    where a.attrelid = v_audit_table and a.attnum > 0 and not a.attisdropped
      and a.attidentity = '' and a.attgenerated = ''
      and a.attname::text <> 'id' and not (a.attname::text = any (v_columns))
    order by a.attnum
  loop
    v_columns := v_columns || v_column;
    if v_column = 'reason' then
      v_common := v_common || pg_catalog.jsonb_build_object(v_column, coalesce(
        pg_catalog.to_jsonb(nullif(pg_catalog.btrim(pg_catalog.current_setting('app.change_reason', true)), '')),
        v_row -> v_column));
    else
      v_common := v_common || pg_catalog.jsonb_build_object(v_column, v_row -> v_column);
    end if;
  end loop;

  select pg_catalog.string_agg(pg_catalog.format('%I', c), ', ') into v_column_list from pg_catalog.unnest(v_columns) c;
  execute pg_catalog.format(
    'insert into %s (%s) select %s from pg_catalog.jsonb_populate_recordset(null::%s, $1)',
    v_audit_table, v_column_list, v_column_list, v_audit_table)
  using (select pg_catalog.jsonb_agg(v_common || c) from pg_catalog.jsonb_array_elements(v_changes) c);
  return null;
end;
$$;
comment on function app_private.tg__audit_changes() is $$Generic AFTER INSERT/UPDATE/DELETE row trigger that records changes in an audit table.
Arguments: TG_ARGV[0] the audit table (e.g. 'app_public.lead_audit_log'); TG_ARGV[1] its column that receives the audited row's id column (e.g. 'lead_id'); TG_ARGV[2..] columns never to record (updated_at, generated columns...).
The audited table has id and tenant_id columns; the audit table has tenant_id, <entity column>, field_name, old_value jsonb, new_value jsonb, changed_by_user_id, changed_by_api_key_id, change_source and changed_at; any other column is filled from the audited row's column of the same name ("reason" prefers the setting app.change_reason).
UPDATE writes one row per changed column (IS DISTINCT FROM on the JSON values); INSERT one row "*created*" with the row as new_value; DELETE one row "*deleted*" with the row as old_value, unless the audit table references the audited table (its history goes with the row) or the row's tenant is being deleted.
Who: app_public.current_user_id() and current_api_key_id() (both null = the system); through what: app_private.change_source().$$;

--------------------------------------------------------------------------------
-- Status, score and assignment histories
--------------------------------------------------------------------------------

create function app_private.tg_leads__status_history() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user_id uuid;
  v_from text;
begin
  if TG_OP = 'UPDATE' then
    if OLD.status is not distinct from NEW.status then
      return null;
    end if;
    v_from := OLD.status;
  end if;
  v_user_id := app_public.current_user_id();
  insert into app_public.lead_status_history (tenant_id, lead_id, from_status, to_status, trigger_type, changed_by_user_id, changed_at)
  values (NEW.tenant_id, NEW.id, v_from, NEW.status,
    app_private.change_source(v_user_id, app_public.current_api_key_id()), v_user_id, pg_catalog.clock_timestamp());
  return null;
end;
$$;
comment on function app_private.tg_leads__status_history() is 'Trigger (_510_status_history, after insert or update of status on leads): records the status a lead enters in lead_status_history, with the change source as trigger_type and the acting user.';

create function app_private.tg_leads__score_history() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if TG_OP = 'INSERT' and NEW.lead_score = 0 then
    return null;
  end if;
  if TG_OP = 'UPDATE' and OLD.lead_score is not distinct from NEW.lead_score
     and OLD.lead_score_factors is not distinct from NEW.lead_score_factors then
    return null;
  end if;
  insert into app_public.lead_score_history (tenant_id, lead_id, score, factors, calculated_at)
  values (NEW.tenant_id, NEW.id, NEW.lead_score, NEW.lead_score_factors, pg_catalog.clock_timestamp());
  return null;
end;
$$;
comment on function app_private.tg_leads__score_history() is 'Trigger (_520_score_history, after insert or update of lead_score, lead_score_factors on leads): records a new score and its factors in lead_score_history when either changes (on insert only when the score is not 0).';

create function app_private.tg_leads__assignment_history() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user_id uuid;
  v_strategy text;
  v_reason text := nullif(pg_catalog.btrim(pg_catalog.current_setting('app.assignment_reason', true)), '');
  v_from uuid;
begin
  if TG_OP = 'INSERT' then
    if NEW.owner_user_id is null then
      return null;
    end if;
  else
    if OLD.owner_user_id is not distinct from NEW.owner_user_id then
      return null;
    end if;
    v_from := OLD.owner_user_id;
  end if;
  v_user_id := app_public.current_user_id();
  v_strategy := app_private.assignment_strategy(v_user_id, app_public.current_api_key_id());
  -- The owner left the tenant (leads_owner_must_be_a_member sets the owner to null).
  if NEW.owner_user_id is null and v_from is not null and not exists (
    select 1 from app_public.memberships m where m.tenant_id = NEW.tenant_id and m.user_id = v_from
  ) then
    v_strategy := 'system';
    v_reason := coalesce(v_reason, 'The previous owner is no longer a member of this tenant');
  end if;
  insert into app_public.lead_assignments (tenant_id, lead_id, from_user_id, to_user_id, strategy, reason, assigned_by_user_id, assigned_at)
  values (NEW.tenant_id, NEW.id, v_from, NEW.owner_user_id, v_strategy, v_reason, v_user_id, pg_catalog.clock_timestamp());
  return null;
end;
$$;
comment on function app_private.tg_leads__assignment_history() is 'Trigger (_530_assignment_history, after insert or update of owner_user_id on leads): records every owner change in lead_assignments, with the strategy (setting app.assignment_strategy, default manual for users and API keys, system otherwise), the reason (setting app.assignment_reason) and the acting user. An owner removed because they left the tenant is recorded as strategy system.';

--------------------------------------------------------------------------------
-- Duplicate phone numbers within a tenant
--------------------------------------------------------------------------------

create function app_private.tg_leads__phone_must_be_unique() returns trigger
  language plpgsql volatile
  -- SECURITY INVOKER on purpose: as the request role, row-level security also keeps other tenants out of sight.
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_existing uuid;
begin
  if NEW.phone is null or NEW.deleted_at is not null then
    return NEW;
  end if;
  if TG_OP = 'UPDATE' and OLD.phone is not distinct from NEW.phone and OLD.deleted_at is null then
    return NEW;
  end if;
  select l.id into v_existing
  from app_public.leads l
  where l.tenant_id = NEW.tenant_id
    and l.phone = NEW.phone
    and l.deleted_at is null
    and l.id <> NEW.id
  limit 1;
  if v_existing is not null then
    raise exception 'A lead with phone % already exists in this tenant (lead %)', NEW.phone, v_existing
      using errcode = '23505';
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_leads__phone_must_be_unique() is 'Trigger (_200_phone_must_be_unique, before insert or update of phone, deleted_at on leads): raises 23505 "A lead with phone ... already exists in this tenant (lead <id>)" when another live lead of the same tenant has the phone. Only the row''s own tenant is looked at; the unique index leads_phone_must_be_unique_per_tenant stays the guarantee under concurrent inserts. Note: the lookup relies on the planner choosing that index, which it does once app_public.leads has statistics; on a never-analyzed table a very large single-statement import is slow (run ANALYZE app_public.leads first).';

--------------------------------------------------------------------------------
-- Do-not-contact list: a lead set to dnc puts its number on the list
--------------------------------------------------------------------------------

create function app_private.tg_leads__add_to_dnc_list() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if NEW.status <> 'dnc' or NEW.phone is null then
    return null;
  end if;
  if TG_OP = 'UPDATE' and OLD.status = 'dnc' then
    return null;
  end if;
  insert into app_public.dnc_list (tenant_id, phone, reason, source, added_by_user_id)
  values (NEW.tenant_id, NEW.phone, pg_catalog.format('The lead''s status was set to dnc (lead %s)', NEW.id), 'lead_status',
    app_public.current_user_id())
  on conflict (tenant_id, phone) do nothing;
  return null;
end;
$$;
comment on function app_private.tg_leads__add_to_dnc_list() is 'Trigger (_540_add_to_dnc_list, after insert or update of status on leads): when a lead''s status becomes dnc, adds its phone to the tenant''s do-not-contact list (source lead_status; nothing when it is already there or the lead has no phone).';

--------------------------------------------------------------------------------
-- Triggers
--------------------------------------------------------------------------------

create trigger _200_phone_must_be_unique before insert or update of phone, deleted_at on app_public.leads
  for each row execute function app_private.tg_leads__phone_must_be_unique();
create trigger _500_audit after insert or update or delete on app_public.leads
  for each row execute function app_private.tg__audit_changes('app_public.lead_audit_log', 'lead_id', 'updated_at', 'full_name');
create trigger _510_status_history after insert or update of status on app_public.leads
  for each row execute function app_private.tg_leads__status_history();
create trigger _520_score_history after insert or update of lead_score, lead_score_factors on app_public.leads
  for each row execute function app_private.tg_leads__score_history();
create trigger _530_assignment_history after insert or update of owner_user_id on app_public.leads
  for each row execute function app_private.tg_leads__assignment_history();
create trigger _540_add_to_dnc_list after insert or update of status on app_public.leads
  for each row execute function app_private.tg_leads__add_to_dnc_list();

create trigger _500_audit after insert or update or delete on app_public.dnc_list
  for each row execute function app_private.tg__audit_changes('app_public.dnc_audit_log', 'dnc_entry_id');

--------------------------------------------------------------------------------
-- Managed changes: reassign, soft delete, restore
--------------------------------------------------------------------------------

create function app_private.require_manager(action text) returns uuid
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_public.current_tenant_id();
begin
  if v_tenant_id is null then
    if app_public.current_user_id() is null and app_public.current_api_key_id() is null then
      raise exception 'You must be logged in to %', action using errcode = '28000';
    end if;
    raise exception 'You are not a member of that tenant' using errcode = '42501';
  end if;
  if not app_hidden.current_user_has_role('manager') then
    raise exception 'Only managers, admins and owners can %', action using errcode = '42501';
  end if;
  return v_tenant_id;
end;
$$;
comment on function app_private.require_manager(text) is 'Returns the current tenant id when the caller is a manager, admin or owner there; raises 28000 when not logged in, 42501 "Only managers, admins and owners can <action>" otherwise.';

create function app_public.reassign_lead(lead_id uuid, to_user_id uuid, reason text default null) returns app_public.leads
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_manager('reassign leads');
  v_lead app_public.leads;
  v_previous_reason text := pg_catalog.current_setting('app.assignment_reason', true);
begin
  select l.* into v_lead
  from app_public.leads l
  where l.id = reassign_lead.lead_id and l.tenant_id = v_tenant_id
  for update;
  if v_lead.id is null then
    raise exception 'Lead not found in this tenant' using errcode = 'P0002';
  end if;
  if v_lead.deleted_at is not null then
    raise exception 'Invalid lead_id: the lead is deleted (restore it first)' using errcode = '22023';
  end if;
  if reassign_lead.to_user_id is not null and not exists (
    select 1 from app_public.memberships m where m.tenant_id = v_tenant_id and m.user_id = reassign_lead.to_user_id
  ) then
    raise exception 'Invalid to_user_id: that user is not a member of this tenant' using errcode = '22023';
  end if;
  if v_lead.owner_user_id is not distinct from reassign_lead.to_user_id then
    return v_lead;
  end if;

  perform pg_catalog.set_config('app.assignment_reason', coalesce(pg_catalog.btrim(reassign_lead.reason), ''), true);
  update app_public.leads l
    set owner_user_id = reassign_lead.to_user_id
    where l.id = v_lead.id and l.tenant_id = v_tenant_id
    returning l.* into v_lead;
  perform pg_catalog.set_config('app.assignment_reason', coalesce(v_previous_reason, ''), true);
  return v_lead;
end;
$$;
comment on function app_public.reassign_lead(uuid, uuid, text) is 'Gives a lead of the current tenant to another member (or to nobody when to_user_id is null), recording who, why (reason) and how in lead_assignments. Managers, admins and owners only. Errors: 42501 not allowed; P0002 no such lead in this tenant; 22023 the lead is deleted, or to_user_id is not a member of this tenant.';

create function app_public.delete_lead(lead_id uuid) returns app_public.leads
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_manager('delete leads');
  v_lead app_public.leads;
begin
  select l.* into v_lead
  from app_public.leads l
  where l.id = delete_lead.lead_id and l.tenant_id = v_tenant_id
  for update;
  if v_lead.id is null then
    raise exception 'Lead not found in this tenant' using errcode = 'P0002';
  end if;
  if v_lead.deleted_at is not null then
    raise exception 'Invalid lead_id: the lead is already deleted' using errcode = '22023';
  end if;
  update app_public.leads l
    set deleted_at = pg_catalog.now()
    where l.id = v_lead.id and l.tenant_id = v_tenant_id
    returning l.* into v_lead;
  return v_lead;
end;
$$;
comment on function app_public.delete_lead(uuid) is 'Soft-deletes a lead of the current tenant (sets deleted_at; the change is in the audit log and restore_lead undoes it). Its phone number becomes free for a new lead. Managers, admins and owners only. Errors: 42501 not allowed; P0002 no such lead in this tenant; 22023 already deleted.';

create function app_public.restore_lead(lead_id uuid) returns app_public.leads
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_manager('restore leads');
  v_lead app_public.leads;
  v_existing uuid;
begin
  select l.* into v_lead
  from app_public.leads l
  where l.id = restore_lead.lead_id and l.tenant_id = v_tenant_id
  for update;
  if v_lead.id is null then
    raise exception 'Lead not found in this tenant' using errcode = 'P0002';
  end if;
  if v_lead.deleted_at is null then
    raise exception 'Invalid lead_id: the lead is not deleted' using errcode = '22023';
  end if;
  if v_lead.phone is not null then
    select l.id into v_existing
    from app_public.leads l
    where l.tenant_id = v_tenant_id and l.phone = v_lead.phone and l.deleted_at is null and l.id <> v_lead.id
    limit 1;
    if v_existing is not null then
      raise exception 'The lead cannot be restored: lead % now has the phone %', v_existing, v_lead.phone
        using errcode = '23505';
    end if;
  end if;
  update app_public.leads l
    set deleted_at = null
    where l.id = v_lead.id and l.tenant_id = v_tenant_id
    returning l.* into v_lead;
  return v_lead;
end;
$$;
comment on function app_public.restore_lead(uuid) is 'Brings back a soft-deleted lead of the current tenant (the change is in the audit log). Managers, admins and owners only. Errors: 42501 not allowed; P0002 no such lead in this tenant; 22023 not deleted; 23505 another live lead now has its phone number (the message names it).';

--------------------------------------------------------------------------------
-- Do-not-contact list: check and remove
--------------------------------------------------------------------------------

create function app_public.is_on_dnc_list(phone text, tenant_id uuid) returns boolean
  language plpgsql stable
  -- SECURITY INVOKER: a request reads its own tenant's list through row-level security.
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := coalesce(is_on_dnc_list.tenant_id, app_public.current_tenant_id());
  v_trusted boolean;
begin
  if is_on_dnc_list.phone is null or is_on_dnc_list.phone !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'Invalid phone: use E.164 form, e.g. +12125551234' using errcode = '22023';
  end if;
  if v_tenant_id is null then
    raise exception 'Invalid tenant_id: it is required outside a tenant' using errcode = '22023';
  end if;
  -- The owner role (worker, SECURITY DEFINER functions) and superusers may ask about any tenant.
  select r.rolsuper or c.relowner = r.oid into v_trusted
  from pg_catalog.pg_class c, pg_catalog.pg_roles r
  where c.oid = 'app_public.dnc_list'::regclass and r.rolname = current_user;
  if not coalesce(v_trusted, false) and v_tenant_id is distinct from app_public.current_tenant_id() then
    raise exception 'You can only check the do-not-contact list of your current tenant' using errcode = '42501';
  end if;
  return exists (
    select 1 from app_public.dnc_list d
    where d.tenant_id = v_tenant_id and d.phone = is_on_dnc_list.phone::app_public.e164_phone
  );
end;
$$;
comment on function app_public.is_on_dnc_list(text, uuid) is $$True when the number is on the tenant's do-not-contact list (tenant_id null means the current tenant).
THE RULE: nothing in Switchboard may ever text or call a number on this list. Every later feature that sends a message or places a call (nurture, auto-responses, routing call-backs, outbound calls) must check it in the database, in the same transaction that queues the message or call, never only in TypeScript.
As a request you may only ask about your current tenant; the owner role (worker) may ask about any tenant. Errors: 22023 a phone that is not E.164 (+12125551234); 42501 another tenant.$$;

create function app_public.remove_from_dnc_list(phone text, reason text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_manager('remove numbers from the do-not-contact list');
  v_reason text := nullif(pg_catalog.btrim(remove_from_dnc_list.reason), '');
  v_previous_reason text := pg_catalog.current_setting('app.change_reason', true);
  v_entry_id uuid;
begin
  if v_reason is null then
    raise exception 'Invalid reason: say why this number may be contacted again' using errcode = '22023';
  end if;
  if remove_from_dnc_list.phone is null or remove_from_dnc_list.phone !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'Invalid phone: use E.164 form, e.g. +12125551234' using errcode = '22023';
  end if;
  perform pg_catalog.set_config('app.change_reason', v_reason, true);
  delete from app_public.dnc_list d
    where d.tenant_id = v_tenant_id and d.phone = remove_from_dnc_list.phone::app_public.e164_phone
    returning d.id into v_entry_id;
  perform pg_catalog.set_config('app.change_reason', coalesce(v_previous_reason, ''), true);
  if v_entry_id is null then
    raise exception 'That number is not on the do-not-contact list' using errcode = 'P0002';
  end if;
  return true;
end;
$$;
comment on function app_public.remove_from_dnc_list(text, text) is 'Takes a number off the current tenant''s do-not-contact list; the removal and its reason are kept in dnc_audit_log. Managers, admins and owners only. Errors: 42501 not allowed; 22023 blank reason or a phone that is not E.164; P0002 the number is not on the list.';

--------------------------------------------------------------------------------
-- Lead timeline
--------------------------------------------------------------------------------

create type app_public.lead_timeline_event as (
  occurred_at timestamptz,
  event_type text,
  summary text,
  details jsonb,
  actor_user_id uuid
);
comment on type app_public.lead_timeline_event is 'One thing that happened to a lead, as shown in its timeline.';
comment on column app_public.lead_timeline_event.occurred_at is 'When it happened.';
comment on column app_public.lead_timeline_event.event_type is 'What kind of event: created, field_changed, deleted, restored, status_changed, score_changed or assigned (more kinds, such as messages and calls, may be added).';
comment on column app_public.lead_timeline_event.summary is 'The event in plain English, e.g. "Status changed from new to contacted".';
comment on column app_public.lead_timeline_event.details is 'The event''s data as a JSON object (depends on event_type).';
comment on column app_public.lead_timeline_event.actor_user_id is 'The user who did it, when a user did.';

create function app_hidden.lead_timeline_value(value jsonb) returns text
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select case
    when value is null or value = 'null'::jsonb then 'empty'
    when pg_catalog.length(coalesce(value #>> '{}', value::text)) > 80
      then pg_catalog.left(coalesce(value #>> '{}', value::text), 79) || '…'
    else coalesce(value #>> '{}', value::text)
  end;
$$;
comment on function app_hidden.lead_timeline_value(jsonb) is 'A recorded value as short text for a timeline summary: strings as they are, other JSON as JSON, "empty" for null, at most 80 characters.';

create function app_hidden.lead_timeline_member_name(tenant_id uuid, user_id uuid) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(
    (select nullif(pg_catalog.btrim(coalesce(p.first_name, '') || ' ' || coalesce(p.last_name, '')), '')
       from app_public.user_profiles p
      where p.tenant_id = lead_timeline_member_name.tenant_id and p.user_id = lead_timeline_member_name.user_id),
    (select u.email::text from app_public.users u where u.id = lead_timeline_member_name.user_id),
    'a former member'
  );
$$;
comment on function app_hidden.lead_timeline_member_name(uuid, uuid) is 'How the timeline names a member: their profile name in the tenant, else their email, else "a former member" (as far as the caller may see).';

create function app_public.lead_timeline(lead_id uuid) returns setof app_public.lead_timeline_event
  language sql stable
  -- SECURITY INVOKER: row-level security decides what the caller sees.
  set search_path to pg_catalog, public, pg_temp
as $$
  -- One branch per source; a new source (messages, calls, routing decisions) is one more UNION ALL
  -- branch with the same columns. source_order and seq only break ties between equal times.
  select e.occurred_at, e.event_type, e.summary, e.details, e.actor_user_id
  from (
    -- Audit log: creation, field changes, deletion and restoration. Status, score and owner
    -- changes have their own, richer branches below.
    select a.changed_at as occurred_at, 1 as source_order, a.id as seq,
      case
        when a.field_name = '*created*' then 'created'
        when a.field_name = '*deleted*' or (a.field_name = 'deleted_at' and a.new_value is not null) then 'deleted'
        when a.field_name = '*restored*' or a.field_name = 'deleted_at' then 'restored'
        else 'field_changed'
      end as event_type,
      case
        when a.field_name = '*created*' then 'Lead created'
        when a.field_name = '*deleted*' or (a.field_name = 'deleted_at' and a.new_value is not null) then 'Lead deleted'
        when a.field_name = '*restored*' or a.field_name = 'deleted_at' then 'Lead restored'
        when a.old_value is null then
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' set to ' || app_hidden.lead_timeline_value(a.new_value)
        when a.new_value is null then
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' cleared (was ' || app_hidden.lead_timeline_value(a.old_value) || ')'
        else
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' changed from ' || app_hidden.lead_timeline_value(a.old_value)
          || ' to ' || app_hidden.lead_timeline_value(a.new_value)
      end
      || case when a.change_source <> 'manual' then ' (' || a.change_source || ')' else '' end as summary,
      pg_catalog.jsonb_build_object('field', a.field_name, 'old_value', a.old_value, 'new_value', a.new_value,
        'change_source', a.change_source, 'api_key_id', a.changed_by_api_key_id) as details,
      a.changed_by_user_id as actor_user_id
    from app_public.lead_audit_log a
    where a.lead_id = lead_timeline.lead_id
      and a.field_name not in ('status', 'lead_score', 'lead_score_factors', 'owner_user_id')

    union all

    select s.changed_at, 2, s.id,
      'status_changed',
      case when s.from_status is null then 'Status set to ' || s.to_status
           else 'Status changed from ' || s.from_status || ' to ' || s.to_status end
      || case when s.trigger_type <> 'manual' then ' (' || s.trigger_type || ')' else '' end,
      pg_catalog.jsonb_build_object('from_status', s.from_status, 'to_status', s.to_status, 'trigger_type', s.trigger_type),
      s.changed_by_user_id
    from app_public.lead_status_history s
    where s.lead_id = lead_timeline.lead_id

    union all

    select sc.calculated_at, 3, sc.id,
      'score_changed',
      case
        when sc.previous_score is null then 'Score set to ' || sc.score
        when sc.previous_score = sc.score then 'Score factors updated (score stays ' || sc.score || ')'
        else 'Score changed from ' || sc.previous_score || ' to ' || sc.score
      end,
      pg_catalog.jsonb_build_object('score', sc.score, 'previous_score', sc.previous_score, 'factors', sc.factors),
      null::uuid
    from (
      select h.*, pg_catalog.lag(h.score) over (order by h.calculated_at, h.id) as previous_score
      from app_public.lead_score_history h
      where h.lead_id = lead_timeline.lead_id
    ) sc

    union all

    select g.assigned_at, 4, g.id,
      'assigned',
      case
        when g.from_user_id is null then 'Assigned to ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.to_user_id)
        when g.to_user_id is null then 'Unassigned from ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.from_user_id)
        else 'Reassigned from ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.from_user_id)
          || ' to ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.to_user_id)
      end
      || case when g.strategy <> 'manual' then ' (' || pg_catalog.replace(g.strategy, '_', ' ') || ')' else '' end
      || coalesce(': ' || g.reason, ''),
      pg_catalog.jsonb_build_object('from_user_id', g.from_user_id, 'to_user_id', g.to_user_id,
        'strategy', g.strategy, 'reason', g.reason),
      g.assigned_by_user_id
    from app_public.lead_assignments g
    where g.lead_id = lead_timeline.lead_id
  ) e
  order by e.occurred_at, e.source_order, e.seq;
$$;
comment on function app_public.lead_timeline(uuid) is 'Everything that happened to a lead, oldest first, in plain English: its creation, field changes, deletion and restoration, status changes, score changes and owner changes (more sources, such as messages, calls and routing decisions, join as they are built). Shows only what you may see.';

--------------------------------------------------------------------------------
-- Function privileges
--------------------------------------------------------------------------------

grant execute on function
  app_public.reassign_lead(uuid, uuid, text),
  app_public.delete_lead(uuid),
  app_public.restore_lead(uuid),
  app_public.is_on_dnc_list(text, uuid),
  app_public.remove_from_dnc_list(text, text),
  app_public.lead_timeline(uuid),
  app_hidden.lead_timeline_value(jsonb),
  app_hidden.lead_timeline_member_name(uuid, uuid)
to :DATABASE_VISITOR;

--! split: 030-analysis.sql
--------------------------------------------------------------------------------
-- Lead analysis: the lead filter language (shared by find_leads and saved segments),
-- name/phone/email search, segments with a maintained lead count, lead source costs
-- and ROI, and the status funnel.
--
-- The filter language is compiled to SQL safely: the SQL text is assembled only from
-- fixed fragments chosen by whitelisted keys, and every value is bound as a typed
-- parameter (EXECUTE ... USING). No user string ever becomes SQL text.
--
-- Idempotent: drops what it creates (graphile-migrate re-runs current/ on change).
-- 010-leads.sql recreates app_public.leads on every run, which drops the triggers on
-- leads and the functions taking or returning its row type; they are recreated here.
--------------------------------------------------------------------------------

drop function if exists app_public.segments_leads(app_public.segments);
drop table if exists app_public.segments, app_public.lead_source_costs cascade;
drop function if exists app_public.find_leads(jsonb);
drop function if exists app_public.search_leads(text);
drop function if exists app_public.lead_source_roi(date, date);
drop function if exists app_public.lead_funnel(date, date);
drop function if exists app_private.refresh_segment_counts(uuid);
drop function if exists app_private.tg_leads__enqueue_segment_refresh() cascade;
drop function if exists app_private.tg_segments__require_creator_or_manager() cascade;
drop function if exists app_private.tg_segments__validate_filter() cascade;
drop function if exists app_hidden.count_matching_leads(uuid, jsonb);
drop function if exists app_hidden.tenant_day_start(uuid, date);
drop function if exists app_hidden.like_escape(text);
drop function if exists app_hidden.phone_search_digits(text);
drop function if exists app_hidden.filter_text_list(text, jsonb, boolean);
drop function if exists app_hidden.filter_integer(text, jsonb, integer, integer);
drop function if exists app_hidden.filter_date(text, jsonb);
drop function if exists app_hidden.parse_lead_filter(jsonb);
drop function if exists app_hidden.lead_filter_where(app_hidden.lead_filter);
drop type if exists app_hidden.lead_filter cascade;
drop type if exists app_public.lead_source_roi_row, app_public.lead_funnel_stage cascade;
drop index if exists app_public.leads_phone_trgm_search;

-- Phone search ("555 0101", "(212) 555-0101") matches digits anywhere in the E.164 number;
-- a trigram index lets that LIKE use an index like the name and email trigram indexes in 010.
create index leads_phone_trgm_search on app_public.leads using gin ((phone::text) public.gin_trgm_ops);

--------------------------------------------------------------------------------
-- The lead filter language
--------------------------------------------------------------------------------

create type app_hidden.lead_filter as (
  status text[],
  status_not text[],
  tags_any text[],
  tags_all text[],
  score_min int,
  score_max int,
  source text[],
  created_within_days int,
  created_from date,
  created_to date,
  city text[],
  region text[],
  owner_user_id uuid,
  unassigned boolean,
  text text,
  include_deleted boolean
);
comment on type app_hidden.lead_filter is 'A validated, typed lead filter (the result of parse_lead_filter). A null field means the filter does not constrain it.';
comment on column app_hidden.lead_filter.status is 'Statuses the lead must have one of.';
comment on column app_hidden.lead_filter.status_not is 'Statuses the lead must not have.';
comment on column app_hidden.lead_filter.tags_any is 'The lead must have at least one of these tags.';
comment on column app_hidden.lead_filter.tags_all is 'The lead must have all of these tags.';
comment on column app_hidden.lead_filter.score_min is 'Lowest lead score (0-100), inclusive.';
comment on column app_hidden.lead_filter.score_max is 'Highest lead score (0-100), inclusive.';
comment on column app_hidden.lead_filter.source is 'Sources the lead must have one of.';
comment on column app_hidden.lead_filter.created_within_days is 'The lead was created within this many days before now.';
comment on column app_hidden.lead_filter.created_from is 'First day of creation (inclusive), in the tenant''s time zone.';
comment on column app_hidden.lead_filter.created_to is 'Last day of creation (inclusive), in the tenant''s time zone.';
comment on column app_hidden.lead_filter.city is 'Cities, lowercased (compared case-insensitively).';
comment on column app_hidden.lead_filter.region is 'Regions the lead must be in one of (exact, e.g. FL).';
comment on column app_hidden.lead_filter.owner_user_id is 'The member who must own the lead.';
comment on column app_hidden.lead_filter.unassigned is 'True: only leads without an owner; false: only leads with one.';
comment on column app_hidden.lead_filter.text is 'Text to find in the name, email or phone number (trimmed).';
comment on column app_hidden.lead_filter.include_deleted is 'True to include soft-deleted leads (default false).';

create function app_hidden.filter_text_list(field text, value jsonb, allow_string boolean) returns text[]
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_result text[];
  v_what text := case when allow_string then 'a string or a non-empty array of strings' else 'a non-empty array of strings' end;
begin
  if allow_string and pg_catalog.jsonb_typeof(value) = 'string' then
    v_result := array[value #>> '{}'];
  elsif pg_catalog.jsonb_typeof(value) = 'array' then
    if pg_catalog.jsonb_array_length(value) = 0 or pg_catalog.jsonb_array_length(value) > 100 then
      raise exception 'Filter field ''%'' must be % (1 to 100 values)', field, v_what using errcode = '22023';
    end if;
    if exists (select 1 from pg_catalog.jsonb_array_elements(value) e where pg_catalog.jsonb_typeof(e) <> 'string') then
      raise exception 'Filter field ''%'' must be %', field, v_what using errcode = '22023';
    end if;
    select pg_catalog.array_agg(e order by o) into v_result from pg_catalog.jsonb_array_elements_text(value) with ordinality x(e, o);
  else
    raise exception 'Filter field ''%'' must be %', field, v_what using errcode = '22023';
  end if;
  if exists (select 1 from pg_catalog.unnest(v_result) s where pg_catalog.btrim(s) = '' or pg_catalog.length(s) > 200) then
    raise exception 'Filter field ''%'' must not contain blank values or values longer than 200 characters', field using errcode = '22023';
  end if;
  return v_result;
end;
$$;
comment on function app_hidden.filter_text_list(text, jsonb, boolean) is 'Reads a filter value that must be a non-empty array of non-blank strings (or, when allow_string, a single string); raises 22023 naming the field otherwise.';

create function app_hidden.filter_integer(field text, value jsonb, minimum integer, maximum integer) returns integer
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_number numeric;
begin
  if pg_catalog.jsonb_typeof(value) = 'number' then
    v_number := (value #>> '{}')::numeric;
    if v_number = pg_catalog.trunc(v_number) and v_number between minimum and maximum then
      return v_number::integer;
    end if;
  end if;
  raise exception 'Filter field ''%'' must be a whole number from % to %', field, minimum, maximum using errcode = '22023';
end;
$$;
comment on function app_hidden.filter_integer(text, jsonb, integer, integer) is 'Reads a filter value that must be a whole JSON number within [minimum, maximum]; raises 22023 naming the field otherwise.';

create function app_hidden.filter_date(field text, value jsonb) returns date
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if pg_catalog.jsonb_typeof(value) = 'string' and (value #>> '{}') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' then
    begin
      return (value #>> '{}')::date;  -- 2025-02-30 is refused (22008), not rolled over
    exception when datetime_field_overflow or invalid_datetime_format then
      null;
    end;
  end if;
  raise exception 'Filter field ''%'' must be a date like "2025-01-31"', field using errcode = '22023';
end;
$$;
comment on function app_hidden.filter_date(text, jsonb) is 'Reads a filter value that must be an ISO date string (YYYY-MM-DD, a real calendar day); raises 22023 naming the field otherwise.';

create function app_hidden.like_escape(value text) returns text
  language sql immutable strict
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(value, '\', '\\'), '%', '\%'), '_', '\_');
$$;
comment on function app_hidden.like_escape(text) is 'Escapes \, % and _ so the text matches itself literally in LIKE/ILIKE (default escape character \).';

create function app_hidden.phone_search_digits(value text) returns text
  language sql immutable strict
  set search_path to pg_catalog, public, pg_temp
as $$
  select case
    when value ~ '^[0-9 ().+-]+$' and pg_catalog.length(pg_catalog.regexp_replace(value, '[^0-9]', '', 'g')) >= 3
      then pg_catalog.regexp_replace(value, '[^0-9]', '', 'g')
  end;
$$;
comment on function app_hidden.phone_search_digits(text) is 'The digits of a search text that looks like (part of) a phone number (only digits, spaces, ( ) . + -, and at least 3 digits), else null.';

create function app_hidden.parse_lead_filter(filter jsonb) returns app_hidden.lead_filter
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_allowed constant text[] := array['status', 'status_not', 'tags_any', 'tags_all', 'score_min', 'score_max', 'source',
    'created_within_days', 'created_from', 'created_to', 'city', 'region', 'owner_user_id', 'unassigned', 'text', 'include_deleted'];
  v_key text;
  v_value jsonb;
  v_unknown text;
  v_text text;
  r app_hidden.lead_filter;
begin
  if filter is null or pg_catalog.jsonb_typeof(filter) = 'null' then
    return r;
  end if;
  if pg_catalog.jsonb_typeof(filter) <> 'object' then
    raise exception 'A lead filter must be a JSON object such as {"status": ["new", "contacted"], "tags_any": ["vip"]}; got a JSON %',
      pg_catalog.jsonb_typeof(filter) using errcode = '22023';
  end if;

  for v_key, v_value in select e.key, e.value from pg_catalog.jsonb_each(filter) e order by e.key loop
    if not (v_key = any (v_allowed)) then
      raise exception 'Unknown filter field ''%''. Allowed: %',
        case when pg_catalog.length(v_key) > 60 then pg_catalog.left(v_key, 60) || '…' else v_key end,
        pg_catalog.array_to_string(v_allowed, ', ')
        using errcode = '22023';
    end if;
    continue when pg_catalog.jsonb_typeof(v_value) = 'null';  -- a null value means "not set"
    case v_key
      when 'status' then
        r.status := (select pg_catalog.array_agg(pg_catalog.btrim(s)) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, true)) s);
      when 'status_not' then
        r.status_not := (select pg_catalog.array_agg(pg_catalog.btrim(s)) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, false)) s);
      when 'tags_any' then
        r.tags_any := app_hidden.filter_text_list(v_key, v_value, false);
      when 'tags_all' then
        r.tags_all := app_hidden.filter_text_list(v_key, v_value, false);
      when 'score_min' then
        r.score_min := app_hidden.filter_integer(v_key, v_value, 0, 100);
      when 'score_max' then
        r.score_max := app_hidden.filter_integer(v_key, v_value, 0, 100);
      when 'source' then
        r.source := (select pg_catalog.array_agg(pg_catalog.btrim(s)) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, true)) s);
      when 'created_within_days' then
        r.created_within_days := app_hidden.filter_integer(v_key, v_value, 1, 36500);
      when 'created_from' then
        r.created_from := app_hidden.filter_date(v_key, v_value);
      when 'created_to' then
        r.created_to := app_hidden.filter_date(v_key, v_value);
      when 'city' then
        r.city := (select pg_catalog.array_agg(pg_catalog.lower(pg_catalog.btrim(s))) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, true)) s);
      when 'region' then
        r.region := (select pg_catalog.array_agg(pg_catalog.btrim(s)) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, true)) s);
      when 'owner_user_id' then
        if pg_catalog.jsonb_typeof(v_value) <> 'string'
           or (v_value #>> '{}') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
          raise exception 'Filter field ''owner_user_id'' must be a user id (a UUID string)' using errcode = '22023';
        end if;
        r.owner_user_id := (v_value #>> '{}')::uuid;
      when 'unassigned' then
        if pg_catalog.jsonb_typeof(v_value) <> 'boolean' then
          raise exception 'Filter field ''unassigned'' must be true or false' using errcode = '22023';
        end if;
        r.unassigned := (v_value #>> '{}')::boolean;
      when 'include_deleted' then
        if pg_catalog.jsonb_typeof(v_value) <> 'boolean' then
          raise exception 'Filter field ''include_deleted'' must be true or false' using errcode = '22023';
        end if;
        r.include_deleted := (v_value #>> '{}')::boolean;
      when 'text' then
        v_text := case when pg_catalog.jsonb_typeof(v_value) = 'string' then pg_catalog.btrim(v_value #>> '{}') end;
        if v_text is null or v_text = '' or pg_catalog.length(v_text) > 200 then
          raise exception 'Filter field ''text'' must be a non-blank string of at most 200 characters' using errcode = '22023';
        end if;
        r.text := v_text;
    end case;
  end loop;

  select s into v_unknown
    from pg_catalog.unnest(pg_catalog.array_cat(r.status, r.status_not)) s
   where not exists (select 1 from app_public.lead_statuses ls where ls.status = s)
   limit 1;
  if v_unknown is not null then
    raise exception 'Unknown status ''%'' in filter field ''%''. Known statuses: %',
      case when pg_catalog.length(v_unknown) > 60 then pg_catalog.left(v_unknown, 60) || '…' else v_unknown end,
      case when v_unknown = any (r.status) then 'status' else 'status_not' end,
      (select pg_catalog.string_agg(ls.status, ', ' order by ls.stage_order nulls last, ls.status) from app_public.lead_statuses ls)
      using errcode = '22023';
  end if;
  if r.score_min > r.score_max then
    raise exception 'Filter field ''score_min'' (%) must not be greater than ''score_max'' (%)', r.score_min, r.score_max using errcode = '22023';
  end if;
  if r.created_from > r.created_to then
    raise exception 'Filter field ''created_from'' (%) must not be after ''created_to'' (%)', r.created_from, r.created_to using errcode = '22023';
  end if;
  if r.unassigned and r.owner_user_id is not null then
    raise exception 'Filter fields ''unassigned'': true and ''owner_user_id'' cannot be combined' using errcode = '22023';
  end if;
  return r;
end;
$$;
comment on function app_hidden.parse_lead_filter(jsonb) is $$Validates a lead filter document (see find_leads for the language) and returns it typed. Raises 22023 with a message naming the field for: a filter that is not a JSON object, an unknown field ("Unknown filter field 'x'. Allowed: ..."), a value of the wrong type, an out-of-range number, an invalid date or UUID, an unknown status, or contradictory bounds. null (or {}) is the empty filter.$$;

create function app_hidden.lead_filter_where(f app_hidden.lead_filter) returns text
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  -- Only these fixed fragments ever become SQL text; the values are the parameters $1..$16
  -- (see lead_filter_where's comment), so nothing the user wrote reaches the SQL text.
  v_parts text[] := array['l.tenant_id = $1'];
begin
  if not coalesce(f.include_deleted, false) then
    v_parts := v_parts || 'l.deleted_at is null'::text;
  end if;
  if f.status is not null then v_parts := v_parts || 'l.status = any ($2)'::text; end if;
  if f.status_not is not null then v_parts := v_parts || 'l.status <> all ($3)'::text; end if;
  if f.tags_any is not null then v_parts := v_parts || 'l.tags operator(pg_catalog.&&) $4'::text; end if;
  if f.tags_all is not null then v_parts := v_parts || 'l.tags operator(pg_catalog.@>) $5'::text; end if;
  if f.score_min is not null then v_parts := v_parts || 'l.lead_score >= $6'::text; end if;
  if f.score_max is not null then v_parts := v_parts || 'l.lead_score <= $7'::text; end if;
  if f.source is not null then v_parts := v_parts || 'l.source = any ($8)'::text; end if;
  if f.created_within_days is not null then v_parts := v_parts || 'l.created_at >= $9'::text; end if;
  if f.created_from is not null then v_parts := v_parts || 'l.created_at >= $10'::text; end if;
  if f.created_to is not null then v_parts := v_parts || 'l.created_at < $11'::text; end if;
  if f.city is not null then v_parts := v_parts || 'pg_catalog.lower(l.city) = any ($12)'::text; end if;
  if f.region is not null then v_parts := v_parts || 'l.region = any ($13)'::text; end if;
  if f.owner_user_id is not null then v_parts := v_parts || 'l.owner_user_id = $14'::text; end if;
  if f.unassigned then v_parts := v_parts || 'l.owner_user_id is null'::text; end if;
  if not f.unassigned then v_parts := v_parts || 'l.owner_user_id is not null'::text; end if;
  if f.text is not null then
    if app_hidden.phone_search_digits(f.text) is not null then
      v_parts := v_parts || '(l.full_name operator(pg_catalog.~~*) $15 or l.email::text operator(pg_catalog.~~*) $15 or l.phone::text operator(pg_catalog.~~) $16)'::text;
    else
      v_parts := v_parts || '(l.full_name operator(pg_catalog.~~*) $15 or l.email::text operator(pg_catalog.~~*) $15)'::text;
    end if;
  end if;
  return pg_catalog.array_to_string(v_parts, ' and ');
end;
$$;
comment on function app_hidden.lead_filter_where(app_hidden.lead_filter) is $$The WHERE clause for a parsed filter over app_public.leads l, built only from fixed fragments. Parameters: $1 tenant id, $2 status, $3 status_not, $4 tags_any, $5 tags_all, $6 score_min, $7 score_max, $8 source, $9 created after (now - created_within_days), $10 created from (timestamptz), $11 created before (timestamptz, exclusive), $12 city (lowercased), $13 region, $14 owner_user_id, $15 ILIKE pattern of text, $16 LIKE pattern of text's phone digits.$$;

create function app_hidden.tenant_day_start(tenant_id uuid, day date) returns timestamptz
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select day::timestamp at time zone coalesce(
    (select bs.timezone from app_public.business_settings bs where bs.tenant_id = tenant_day_start.tenant_id),
    'UTC');
$$;
comment on function app_hidden.tenant_day_start(uuid, date) is 'Midnight at the start of the given day in the tenant''s time zone (business_settings.timezone; UTC when unknown). Date filters and report windows use it, so "March" means the tenant''s March.';

create function app_hidden.count_matching_leads(tenant_id uuid, filter jsonb) returns integer
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  f app_hidden.lead_filter := app_hidden.parse_lead_filter(filter);
  v_count integer;
begin
  execute pg_catalog.format('select pg_catalog.count(*)::int from app_public.leads l where %s', app_hidden.lead_filter_where(f))
    into v_count
    using count_matching_leads.tenant_id, f.status, f.status_not, f.tags_any, f.tags_all, f.score_min, f.score_max, f.source,
      pg_catalog.now() - pg_catalog.make_interval(days => f.created_within_days),
      app_hidden.tenant_day_start(count_matching_leads.tenant_id, f.created_from),
      app_hidden.tenant_day_start(count_matching_leads.tenant_id, f.created_to + 1),
      f.city, f.region, f.owner_user_id,
      '%' || app_hidden.like_escape(f.text) || '%',
      '%' || app_hidden.phone_search_digits(f.text) || '%';
  return v_count;
end;
$$;
comment on function app_hidden.count_matching_leads(uuid, jsonb) is 'How many of the tenant''s leads match the filter (validated: 22023 for a bad filter). Security invoker: row-level security applies to the caller.';

--------------------------------------------------------------------------------
-- find_leads and search_leads
--------------------------------------------------------------------------------

create function app_public.find_leads(filter jsonb default '{}') returns setof app_public.leads
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  f app_hidden.lead_filter := app_hidden.parse_lead_filter(filter);
  v_tenant_id uuid := app_public.current_tenant_id();
begin
  return query execute pg_catalog.format(
      'select l.* from app_public.leads l where %s order by l.created_at desc, l.id', app_hidden.lead_filter_where(f))
    using v_tenant_id, f.status, f.status_not, f.tags_any, f.tags_all, f.score_min, f.score_max, f.source,
      pg_catalog.now() - pg_catalog.make_interval(days => f.created_within_days),
      app_hidden.tenant_day_start(v_tenant_id, f.created_from),
      app_hidden.tenant_day_start(v_tenant_id, f.created_to + 1),
      f.city, f.region, f.owner_user_id,
      '%' || app_hidden.like_escape(f.text) || '%',
      '%' || app_hidden.phone_search_digits(f.text) || '%';
end;
$$;
comment on function app_public.find_leads(jsonb) is $$The current tenant's leads matching a filter, newest first. The filter is a JSON object; every field is optional and they combine with AND:
  status: "new" or ["new", "contacted"] (one of these statuses) · status_not: ["lost", "dnc"] (none of these)
  tags_any: ["vip", "roof"] (at least one tag) · tags_all: ["vip", "roof"] (every tag)
  score_min, score_max: whole numbers 0 to 100 (inclusive)
  source: "google_ads" or ["google_ads", "referral"]
  created_within_days: 7 (created in the last 7 days; 1 to 36500) · created_from, created_to: "2025-03-01", "2025-03-31" (inclusive days in the business's time zone)
  city: "Austin" or ["austin", "Dallas"] (case-insensitive) · region: "TX" or ["TX", "FL"]
  owner_user_id: "<user id>" · unassigned: true (no owner) or false (has an owner)
  text: "smith" (in the name or email, or digits in the phone number; % and _ are plain characters)
  include_deleted: true (also soft-deleted leads; default false)
Example: {"status": ["new", "contacted"], "tags_any": ["vip"], "score_min": 50, "city": "Austin", "created_within_days": 30}.
A JSON null value means the field is not set; {} (or no filter) matches every live lead. Lists take 1 to 100 non-blank values of at most 200 characters.
Errors: 22023 with a message naming the field for a filter that is not a JSON object (e.g. a string holding broken JSON), an unknown field (the message lists the allowed ones), a wrong type, an out-of-range value, an unknown status, or score_min > score_max / created_from > created_to.$$;

create function app_public.search_leads(query text) returns setof app_public.leads
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_query text := pg_catalog.btrim(search_leads.query);
  v_digits text;
  v_where text;
begin
  if v_query is null or v_query = '' then
    raise exception 'Search text (query) must not be blank' using errcode = '22023';
  end if;
  if pg_catalog.length(v_query) > 200 then
    raise exception 'Search text (query) must be at most 200 characters' using errcode = '22023';
  end if;
  v_digits := app_hidden.phone_search_digits(v_query);
  -- Fixed fragments only; $1 tenant, $2 the text, $3 '%text%', $4 'text%', $5 '% text%', $6 digits, $7 '%digits%'.
  v_where := 'l.tenant_id = $1 and l.deleted_at is null and (l.full_name operator(pg_catalog.~~*) $3'
    || ' or l.full_name operator(public.%) $2 or l.email::text operator(pg_catalog.~~*) $3'
    || case when v_digits is not null then ' or l.phone::text operator(pg_catalog.~~) $7' else '' end
    || ')';
  return query execute pg_catalog.format(
      $sql$select l.* from app_public.leads l where %s
      order by case
          when pg_catalog.lower(l.full_name) = pg_catalog.lower($2) or pg_catalog.lower(l.email::text) = pg_catalog.lower($2)
            or (pg_catalog.length($6) >= 7 and pg_catalog.right(l.phone::text, pg_catalog.length($6)) = $6) then 3
          when l.full_name operator(pg_catalog.~~*) $4 or l.full_name operator(pg_catalog.~~*) $5
            or l.email::text operator(pg_catalog.~~*) $4 then 2
          when l.full_name operator(pg_catalog.~~*) $3 or l.email::text operator(pg_catalog.~~*) $3
            or l.phone::text operator(pg_catalog.~~) $7 then 1
          else 0
        end desc,
        public.similarity(l.full_name, $2) desc, l.created_at desc, l.id$sql$, v_where)
    using app_public.current_tenant_id(), v_query,
      '%' || app_hidden.like_escape(v_query) || '%',
      app_hidden.like_escape(v_query) || '%',
      '% ' || app_hidden.like_escape(v_query) || '%',
      v_digits,
      '%' || v_digits || '%';
end;
$$;
comment on function app_public.search_leads(text) is $$Finds the current tenant's live leads by name, email or phone, best matches first: exact name, email or phone number; then names or emails starting with the text (or a name word starting with it); then the text anywhere in the name or email, or its digits anywhere in the phone number; then names that are merely similar (trigram similarity, for typos). Within a rank, more similar names and newer leads come first. The text is plain text: %, _, quotes and anything else match themselves. Example: search_leads('(212) 555-0101'), search_leads('smith'). Errors: 22023 for a blank query or one longer than 200 characters.$$;

--------------------------------------------------------------------------------
-- Segments: saved filters with a maintained lead count
--------------------------------------------------------------------------------

create table app_public.segments (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  name text not null,
  description text,
  filter jsonb not null default '{}',
  lead_count integer not null default 0,
  lead_count_refreshed_at timestamptz,
  created_by_user_id uuid default app_public.current_user_id(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint segments_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint segments_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint segments_name_must_be_unique_per_tenant unique (tenant_id, name),
  constraint segments_creator_must_be_a_member foreign key (tenant_id, created_by_user_id)
    references app_public.memberships (tenant_id, user_id) on delete set null (created_by_user_id),
  constraint segments_name_must_not_be_blank check (pg_catalog.btrim(name) <> ''),
  constraint segments_name_must_be_at_most_100_characters check (pg_catalog.length(name) <= 100),
  constraint segments_filter_must_be_an_object check (pg_catalog.jsonb_typeof(filter) = 'object'),
  constraint segments_lead_count_must_not_be_negative check (lead_count >= 0)
);
comment on table app_public.segments is $$A saved lead filter with a name, e.g. "Hot leads in Austin" = {"status": ["hot"], "city": "Austin"} (the filter language is described on find_leads). Its leads are listed by the leads field (segments_leads), and lead_count is kept up to date: computed when the segment is created or its filter changes, and refreshed a few seconds after leads change. Every member can read and create segments; the creator and owners, admins and managers can change or delete one.$$;
comment on column app_public.segments.id is 'The segment''s id.';
comment on column app_public.segments.tenant_id is 'The tenant the segment belongs to.';
comment on column app_public.segments.name is 'The segment''s name, unique in the tenant (1 to 100 characters).';
comment on column app_public.segments.description is 'What the segment is for, in words.';
comment on column app_public.segments.filter is 'The lead filter, a JSON object such as {"status": ["new", "contacted"], "tags_any": ["vip"]} (see find_leads for every field). Validated when saved: a bad filter is refused with 22023 naming the field.';
comment on column app_public.segments.lead_count is 'How many live leads match the filter, as of lead_count_refreshed_at (computed when the filter is saved, refreshed a few seconds after leads change).';
comment on column app_public.segments.lead_count_refreshed_at is 'When lead_count was last computed.';
comment on column app_public.segments.created_by_user_id is 'The member who created the segment (null when created with an API key or when they have left); they may change or delete it.';
comment on column app_public.segments.created_at is 'When the segment was created.';
comment on column app_public.segments.updated_at is 'When the segment''s name, description or filter last changed.';

create index segments_tenant_id_created_by_user_id_idx on app_public.segments (tenant_id, created_by_user_id);

create function app_private.tg_segments__require_creator_or_manager() returns trigger
  language plpgsql volatile
  -- SECURITY INVOKER on purpose: it must see who is really acting.
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_trusted boolean;
begin
  -- The table owner (migrations, the worker, SECURITY DEFINER functions) and superusers are trusted.
  select r.rolsuper or c.relowner = r.oid into v_trusted
  from pg_catalog.pg_class c, pg_catalog.pg_roles r
  where c.oid = TG_RELID and r.rolname = current_user;
  if not coalesce(v_trusted, false)
     and not (OLD.created_by_user_id is not null and OLD.created_by_user_id = app_public.current_user_id())
     and not app_hidden.current_user_has_role('manager') then
    raise exception 'Only the segment''s creator or owners, admins and managers can % the segment "%"',
      case TG_OP when 'DELETE' then 'delete' else 'change' end, OLD.name
      using errcode = '42501';
  end if;
  if TG_OP = 'DELETE' then
    return OLD;
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_segments__require_creator_or_manager() is 'Trigger (_050): raises 42501 unless the segment is changed or deleted by its creator, an owner, admin or manager, or the table owner (the worker refreshing counts).';

create function app_private.tg_segments__validate_filter() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Raises 22023 naming the field; the count runs with the caller's rights (row-level security applies).
  NEW.lead_count := app_hidden.count_matching_leads(NEW.tenant_id, NEW.filter);
  NEW.lead_count_refreshed_at := pg_catalog.now();
  return NEW;
end;
$$;
comment on function app_private.tg_segments__validate_filter() is 'Trigger (_200): validates the filter (22023 naming the field) and computes lead_count when a segment is created or its filter changes.';

alter table app_public.segments enable row level security;
alter table app_public.segments force row level security;
create policy owner_all on app_public.segments for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.segments for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.segments for insert to :DATABASE_VISITOR
  with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.segments for update to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()))
  with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.segments for delete to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select, delete on app_public.segments to :DATABASE_VISITOR;
grant insert (tenant_id, name, description, filter) on app_public.segments to :DATABASE_VISITOR;
grant update (name, description, filter) on app_public.segments to :DATABASE_VISITOR;
-- lead_count and lead_count_refreshed_at are written by the filter trigger and refresh_segment_counts only.

create trigger _050_require_creator_or_manager before update or delete on app_public.segments
  for each row execute function app_private.tg_segments__require_creator_or_manager();
-- Only user-visible changes move updated_at (not the count refresh).
create trigger _100_timestamps before insert or update of name, description, filter on app_public.segments
  for each row execute function app_private.tg__timestamps();
create trigger _200_validate_filter before insert or update of filter on app_public.segments
  for each row execute function app_private.tg_segments__validate_filter();

-- Named segments_<field> so that PostGraphile shows it as the field "leads" on Segment (a connection).
create function app_public.segments_leads(segment app_public.segments) returns setof app_public.leads
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select l.* from app_public.find_leads(segment.filter) l;
$$;
comment on function app_public.segments_leads(app_public.segments) is 'The leads that match the segment''s filter now, newest first (the segment''s leads field; same rules as find_leads).';

create function app_private.refresh_segment_counts(tenant_id uuid) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_segment record;
  v_count integer;
  v_refreshed integer := 0;
begin
  -- Lock each segment before counting, so the count is for the filter it has now; a segment
  -- being edited right now is skipped (its own trigger computes its count).
  for v_segment in
    select s.id, s.name, s.filter from app_public.segments s
    where s.tenant_id = refresh_segment_counts.tenant_id
    order by s.id
    for no key update skip locked
  loop
    begin
      v_count := app_hidden.count_matching_leads(refresh_segment_counts.tenant_id, v_segment.filter);
    exception when invalid_parameter_value then
      -- A filter saved under older rules (e.g. a status since removed): keep its last count.
      raise warning 'Segment % (%) has an invalid filter: %', v_segment.id, v_segment.name, sqlerrm;
      continue;
    end;
    update app_public.segments s
      set lead_count = v_count, lead_count_refreshed_at = pg_catalog.now()
      where s.tenant_id = refresh_segment_counts.tenant_id and s.id = v_segment.id;
    v_refreshed := v_refreshed + 1;
  end loop;
  return v_refreshed;
end;
$$;
comment on function app_private.refresh_segment_counts(uuid) is 'Recomputes lead_count of every segment of the tenant; returns how many were refreshed. Run by the segment__refresh_counts job, which the leads triggers enqueue (debounced) when leads change. Idempotent.';

create function app_private.tg_leads__enqueue_segment_refresh() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid;
  v_tenants uuid[];
begin
  if TG_OP = 'INSERT' then
    select pg_catalog.array_agg(distinct n.tenant_id) into v_tenants from new_leads n;
  elsif TG_OP = 'DELETE' then
    select pg_catalog.array_agg(distinct o.tenant_id) into v_tenants from old_leads o;
  else
    -- Only changes a filter can see matter (not e.g. last_contact_at or ai_analysis).
    select pg_catalog.array_agg(distinct x.tenant_id) into v_tenants
    from (
      select n.tenant_id from new_leads n join old_leads o on o.id = n.id
      where (n.tenant_id, n.status, n.tags, n.lead_score, n.source, n.created_at, n.city, n.region, n.owner_user_id,
             n.full_name, n.phone::text, n.email::text, n.deleted_at)
        is distinct from
            (o.tenant_id, o.status, o.tags, o.lead_score, o.source, o.created_at, o.city, o.region, o.owner_user_id,
             o.full_name, o.phone::text, o.email::text, o.deleted_at)
      union all
      select o.tenant_id from new_leads n join old_leads o on o.id = n.id where n.tenant_id <> o.tenant_id
    ) x;
  end if;
  for v_tenant_id in
    select t from pg_catalog.unnest(v_tenants) t
    where exists (select 1 from app_public.segments s where s.tenant_id = t)
  loop
    -- job_key in graphile-worker's default "replace" mode: one pending job per tenant whose
    -- run_at moves a few seconds past the latest change (a debounce).
    perform app_private.add_job(
      identifier => 'segment__refresh_counts',
      payload => pg_catalog.json_build_object('tenant_id', v_tenant_id),
      run_at => pg_catalog.clock_timestamp() + interval '5 seconds',
      job_key => 'segment_counts:' || v_tenant_id::text
    );
  end loop;
  return null;
end;
$$;
comment on function app_private.tg_leads__enqueue_segment_refresh() is 'Statement trigger on leads (transition tables new_leads/old_leads): for each tenant with segments whose leads changed in a way a filter can see, enqueues segment__refresh_counts {tenant_id} with job_key segment_counts:<tenant_id> (replace mode), 5 seconds later.';

create trigger _900_enqueue_segment_refresh_on_insert after insert on app_public.leads
  referencing new table as new_leads
  for each statement execute function app_private.tg_leads__enqueue_segment_refresh();
create trigger _900_enqueue_segment_refresh_on_update after update on app_public.leads
  referencing old table as old_leads new table as new_leads
  for each statement execute function app_private.tg_leads__enqueue_segment_refresh();
create trigger _900_enqueue_segment_refresh_on_delete after delete on app_public.leads
  referencing old table as old_leads
  for each statement execute function app_private.tg_leads__enqueue_segment_refresh();

--------------------------------------------------------------------------------
-- Lead source costs and ROI
--------------------------------------------------------------------------------

create table app_public.lead_source_costs (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  source text not null,
  period text not null,
  cost numeric(12, 2) not null,
  notes text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint lead_source_costs_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint lead_source_costs_source_and_period_must_be_unique_per_tenant unique (tenant_id, source, period),
  constraint lead_source_costs_source_must_not_be_blank check (pg_catalog.btrim(source) <> '' and pg_catalog.length(source) <= 100),
  constraint lead_source_costs_period_must_be_a_month_like_2025_01 check (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
  constraint lead_source_costs_cost_must_not_be_negative check (cost >= 0)
);
comment on table app_public.lead_source_costs is 'What the tenant spent on each lead source per month (e.g. google_ads, 2025-03, 1200.00), for source ROI (see lead_source_roi). Members can read them; owners, admins and managers can change them.';
comment on column app_public.lead_source_costs.id is 'The row''s id.';
comment on column app_public.lead_source_costs.tenant_id is 'The tenant that spent the money.';
comment on column app_public.lead_source_costs.source is 'The lead source, as in leads.source (e.g. google_ads).';
comment on column app_public.lead_source_costs.period is 'The month, as YYYY-MM (e.g. 2025-03).';
comment on column app_public.lead_source_costs.cost is 'What was spent on the source that month, in the tenant''s currency (0 or more).';
comment on column app_public.lead_source_costs.notes is 'Notes, e.g. which campaigns.';
comment on column app_public.lead_source_costs.created_at is 'When the row was created.';
comment on column app_public.lead_source_costs.updated_at is 'When the row last changed.';

alter table app_public.lead_source_costs enable row level security;
alter table app_public.lead_source_costs force row level security;
create policy owner_all on app_public.lead_source_costs for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.lead_source_costs for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.lead_source_costs for insert to :DATABASE_VISITOR
  with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.lead_source_costs for update to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()))
  with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.lead_source_costs for delete to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select, delete on app_public.lead_source_costs to :DATABASE_VISITOR;
grant insert (tenant_id, source, period, cost, notes) on app_public.lead_source_costs to :DATABASE_VISITOR;
grant update (source, period, cost, notes) on app_public.lead_source_costs to :DATABASE_VISITOR;
create trigger _050_require_tenant_role before insert or update or delete on app_public.lead_source_costs
  for each row execute function app_private.tg__require_tenant_role('manager', 'lead source costs');
create trigger _100_timestamps before insert or update on app_public.lead_source_costs
  for each row execute function app_private.tg__timestamps();

create type app_public.lead_source_roi_row as (
  source text,
  leads integer,
  conversions integer,
  cost numeric,
  cost_per_lead numeric,
  conversion_rate numeric,
  cost_per_conversion numeric
);
comment on type app_public.lead_source_roi_row is 'Return on investment of one lead source over a date range (see lead_source_roi).';
comment on column app_public.lead_source_roi_row.source is 'The lead source.';
comment on column app_public.lead_source_roi_row.leads is 'Live leads from this source created in the range.';
comment on column app_public.lead_source_roi_row.conversions is 'Of those, how many are won (their status has outcome won: won or recruited).';
comment on column app_public.lead_source_roi_row.cost is 'What the source cost in the months overlapping the range (whole months; 0 when no cost was recorded).';
comment on column app_public.lead_source_roi_row.cost_per_lead is 'cost / leads, rounded to cents; null without leads.';
comment on column app_public.lead_source_roi_row.conversion_rate is 'conversions / leads as a fraction (0.25 = 25%), rounded to 4 decimals; null without leads.';
comment on column app_public.lead_source_roi_row.cost_per_conversion is 'cost / conversions, rounded to cents; null without conversions.';

create function app_public.lead_source_roi(from_date date, to_date date) returns setof app_public.lead_source_roi_row
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_public.current_tenant_id();
  v_from timestamptz;
  v_to timestamptz;
begin
  if from_date is null or to_date is null then
    raise exception 'from_date and to_date are required' using errcode = '22023';
  end if;
  if from_date > to_date then
    raise exception 'from_date (%) must be on or before to_date (%)', from_date, to_date using errcode = '22023';
  end if;
  -- The window in the tenant's time zone, computed once (not per row).
  v_from := app_hidden.tenant_day_start(v_tenant_id, from_date);
  v_to := app_hidden.tenant_day_start(v_tenant_id, to_date + 1);
  return query
    with lead_stats as (
      select l.source, pg_catalog.count(*)::int as leads,
             (pg_catalog.count(*) filter (where st.outcome = 'won'))::int as conversions
        from app_public.leads l
        join app_public.lead_statuses st on st.status = l.status
       where l.tenant_id = v_tenant_id
         and l.deleted_at is null
         and l.created_at >= v_from
         and l.created_at < v_to
       group by l.source
    ), cost_stats as (
      select c.source, pg_catalog.sum(c.cost) as cost
        from app_public.lead_source_costs c
       where c.tenant_id = v_tenant_id
         and c.period between pg_catalog.to_char(from_date, 'YYYY-MM') and pg_catalog.to_char(to_date, 'YYYY-MM')
       group by c.source
    )
    select coalesce(ls.source, cs.source),
           coalesce(ls.leads, 0),
           coalesce(ls.conversions, 0),
           pg_catalog.round(coalesce(cs.cost, 0), 2),
           pg_catalog.round(coalesce(cs.cost, 0) / nullif(ls.leads, 0), 2),
           pg_catalog.round(ls.conversions::numeric / nullif(ls.leads, 0), 4),
           pg_catalog.round(coalesce(cs.cost, 0) / nullif(ls.conversions, 0), 2)
      from lead_stats ls
      full join cost_stats cs on cs.source = ls.source
     order by 1;
end;
$$;
comment on function app_public.lead_source_roi(date, date) is $$Return on investment per lead source for leads created from from_date to to_date (inclusive days in the business's time zone): leads, conversions (won outcomes), cost of the months overlapping the range (whole months), cost per lead, conversion rate and cost per conversion. Sources with costs but no leads appear too (0 leads). Soft-deleted leads are left out. Example: leadSourceRoi(fromDate: "2025-03-01", toDate: "2025-03-31"). Errors: 22023 when a date is missing or from_date is after to_date.$$;

--------------------------------------------------------------------------------
-- Funnel
--------------------------------------------------------------------------------

create type app_public.lead_funnel_stage as (
  stage text,
  stage_order integer,
  leads integer,
  conversion_from_previous numeric
);
comment on type app_public.lead_funnel_stage is 'One stage of the lead funnel over a date range (see lead_funnel).';
comment on column app_public.lead_funnel_stage.stage is 'The stage, named after the main path: new, contacted, qualified, hot, won (contacted includes nurturing and cold; won includes recruited).';
comment on column app_public.lead_funnel_stage.stage_order is 'Position in the funnel, 1 (new) to 5 (won).';
comment on column app_public.lead_funnel_stage.leads is 'Distinct leads that reached this stage or a later one in the range.';
comment on column app_public.lead_funnel_stage.conversion_from_previous is 'leads / the previous stage''s leads, as a fraction rounded to 4 decimals; null for the first stage or when the previous stage has none.';

create function app_public.lead_funnel(from_date date, to_date date) returns setof app_public.lead_funnel_stage
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_public.current_tenant_id();
  v_from timestamptz;
  v_to timestamptz;
begin
  if from_date is null or to_date is null then
    raise exception 'from_date and to_date are required' using errcode = '22023';
  end if;
  if from_date > to_date then
    raise exception 'from_date (%) must be on or before to_date (%)', from_date, to_date using errcode = '22023';
  end if;
  -- The window in the tenant's time zone, computed once (not per row).
  v_from := app_hidden.tenant_day_start(v_tenant_id, from_date);
  v_to := app_hidden.tenant_day_start(v_tenant_id, to_date + 1);
  return query
    with stages as (
      select s.stage_order,
             (pg_catalog.array_agg(s.status order by
                pg_catalog.array_position(array['new', 'contacted', 'qualified', 'hot', 'won']::text[], s.status) nulls last, s.status))[1] as stage
        from app_public.lead_statuses s
       where s.stage_order is not null
       group by s.stage_order
    ), reached as (
      select h.lead_id, pg_catalog.max(st.stage_order) as max_order
        from app_public.lead_status_history h
        join app_public.lead_statuses st on st.status = h.to_status
        join app_public.leads l on l.tenant_id = h.tenant_id and l.id = h.lead_id
       where h.tenant_id = v_tenant_id
         and h.changed_at >= v_from
         and h.changed_at < v_to
         and st.stage_order is not null
         and l.deleted_at is null
       group by h.lead_id
    ), counts as (
      select s.stage, s.stage_order,
             (select pg_catalog.count(*) from reached r where r.max_order >= s.stage_order)::int as leads
        from stages s
    )
    select c.stage, c.stage_order, c.leads,
           pg_catalog.round(c.leads::numeric / nullif(pg_catalog.lag(c.leads) over (order by c.stage_order), 0), 4)
      from counts c
     order by c.stage_order;
end;
$$;
comment on function app_public.lead_funnel(date, date) is $$The lead funnel from from_date to to_date (inclusive days in the business's time zone), from lead_status_history: one row per stage (new, contacted, qualified, hot, won; statuses at the same stage_order count as one stage), with the distinct leads that reached that stage or a later one in the range, and the conversion from the previous stage. Soft-deleted leads are left out. Example: leadFunnel(fromDate: "2025-03-01", toDate: "2025-03-31"). Errors: 22023 when a date is missing or from_date is after to_date.$$;

--------------------------------------------------------------------------------
-- Function privileges
--------------------------------------------------------------------------------

grant execute on function
  app_hidden.filter_text_list(text, jsonb, boolean),
  app_hidden.filter_integer(text, jsonb, integer, integer),
  app_hidden.filter_date(text, jsonb),
  app_hidden.like_escape(text),
  app_hidden.phone_search_digits(text),
  app_hidden.parse_lead_filter(jsonb),
  app_hidden.lead_filter_where(app_hidden.lead_filter),
  app_hidden.tenant_day_start(uuid, date),
  app_hidden.count_matching_leads(uuid, jsonb),
  app_public.find_leads(jsonb),
  app_public.search_leads(text),
  app_public.segments_leads(app_public.segments),
  app_public.lead_source_roi(date, date),
  app_public.lead_funnel(date, date)
to :DATABASE_VISITOR;

--! split: 040-ledger-scoring.sql
--------------------------------------------------------------------------------
-- Budget ledger (append-only, gap-free per tenant, balance computed by the database)
-- and lead scoring (formula in SQL, recalculated by jobs, weights per tenant).
-- Idempotent: drops exactly what it creates (graphile-migrate re-runs current/ on change).
-- 010-leads.sql drops and recreates app_public.leads on every run, which also drops the
-- triggers on leads and the functions taking the leads row type: they are recreated here.
--------------------------------------------------------------------------------

drop trigger if exists _200_validate_scoring_weights on app_public.system_config;
drop trigger if exists _900_enqueue_lead_rescore on app_public.system_config;
drop trigger if exists _900_enqueue_lead_rescore on app_public.tenants;
drop trigger if exists _900_enqueue_lead_score_on_insert on app_public.leads;
drop trigger if exists _900_enqueue_lead_score_on_update on app_public.leads;

drop table if exists app_public.budget_transactions, app_public.budget_accounts cascade;
drop type if exists app_public.lead_score_result cascade;
drop function if exists app_public.record_budget_transaction(text, numeric, uuid, text);
drop function if exists app_private.record_budget_transaction_for_tenant(uuid, text, numeric, uuid, text, uuid, uuid);
drop function if exists app_public.set_budget_allow_negative(boolean);
drop function if exists app_private.tg_budget_transactions__append_only();
drop function if exists app_private.tg_budget_transactions__check_chain();
drop function if exists app_private.refresh_tenant_lead_scores(uuid, uuid, integer);
drop function if exists app_private.refresh_lead_score(uuid);
drop function if exists app_public.calculate_lead_score(app_public.leads);
drop function if exists app_hidden.lead_scoring_weights(uuid);
drop function if exists app_hidden.scoring_weights_problem(jsonb);
drop function if exists app_private.tg_system_config__validate_scoring_weights();
drop function if exists app_private.tg_system_config__enqueue_lead_rescore();
drop function if exists app_private.tg_tenants__enqueue_lead_rescore();
drop function if exists app_private.tg_leads__enqueue_lead_score();

--------------------------------------------------------------------------------
-- Budget accounts: one row per tenant, the running balance and the last sequence number.
--------------------------------------------------------------------------------
create table app_public.budget_accounts (
  tenant_id uuid primary key,
  balance numeric(12, 2) not null default 0,
  allow_negative boolean not null default false,
  last_seq bigint not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint budget_accounts_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint budget_accounts_balance_must_not_be_negative check (allow_negative or balance >= 0),
  constraint budget_accounts_last_seq_must_not_be_negative check (last_seq >= 0)
);
comment on table app_public.budget_accounts is $$The tenant's lead budget: its balance, and whether it may go below zero. Changed only by record_budget_transaction (every change is a row in budget_transactions) and set_budget_allow_negative. Visible to owners, admins and managers.
@behavior -insert -update -delete$$;
comment on column app_public.budget_accounts.tenant_id is 'The tenant whose budget this is (one account per tenant, created with its first transaction).';
comment on column app_public.budget_accounts.balance is 'The current balance: the sum of all budget transactions. Equals balance_after of the latest transaction.';
comment on column app_public.budget_accounts.allow_negative is 'When true, lead purchases and adjustments may take the balance below zero. Owners and admins change it with set_budget_allow_negative.';
comment on column app_public.budget_accounts.last_seq is 'The seq of the latest budget transaction (0 before the first one).';
comment on column app_public.budget_accounts.created_at is 'When the account was created.';
comment on column app_public.budget_accounts.updated_at is 'When the balance or settings last changed.';

--------------------------------------------------------------------------------
-- Budget transactions: the append-only ledger.
--------------------------------------------------------------------------------
create table app_public.budget_transactions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  seq bigint not null,
  transaction_type text not null,
  amount numeric(12, 2) not null,
  balance_after numeric(12, 2) not null,
  lead_id uuid,
  description text,
  created_by_user_id uuid,
  created_by_api_key_id uuid,
  created_at timestamptz not null default now(),
  constraint budget_transactions_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint budget_transactions_account_must_exist foreign key (tenant_id) references app_public.budget_accounts (tenant_id) on delete cascade,
  constraint budget_transactions_seq_must_be_unique_per_tenant unique (tenant_id, seq),
  -- No action (not cascade or set null): a lead with ledger entries can't be hard-deleted (leads are soft-deleted).
  constraint budget_transactions_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id),
  constraint budget_transactions_seq_must_be_positive check (seq > 0),
  constraint budget_transactions_transaction_type_must_be_known check (transaction_type in ('deposit', 'lead_purchase', 'refund', 'adjustment')),
  constraint budget_transactions_amount_must_not_be_zero check (amount <> 0),
  constraint budget_transactions_amount_sign_must_match_the_transaction_type check (
    case transaction_type
      when 'deposit' then amount > 0
      when 'refund' then amount > 0
      when 'lead_purchase' then amount < 0
      else true
    end
  ),
  constraint budget_transactions_description_must_be_at_most_1000_characters check (pg_catalog.length(description) <= 1000)
);
comment on table app_public.budget_transactions is $$The tenant's budget ledger: every deposit, lead purchase, refund and adjustment, numbered 1, 2, 3… per tenant without gaps, each with the balance after it. Append-only: rows are never changed or deleted (correct a mistake with a refund or an adjustment). Written only by record_budget_transaction, which refuses a transaction that would take the balance below zero unless the account allows it. Visible to owners, admins and managers.
@behavior -insert -update -delete$$;
comment on column app_public.budget_transactions.id is 'The transaction''s id.';
comment on column app_public.budget_transactions.tenant_id is 'The tenant whose budget this is.';
comment on column app_public.budget_transactions.seq is 'Sequence number within the tenant''s ledger: 1, 2, 3… without gaps, in the order the transactions were recorded.';
comment on column app_public.budget_transactions.transaction_type is 'deposit (money in, positive), lead_purchase (a lead was bought, negative), refund (money back for a lead, positive) or adjustment (a correction, either sign).';
comment on column app_public.budget_transactions.amount is 'The signed amount, never zero: positive adds to the balance, negative takes from it.';
comment on column app_public.budget_transactions.balance_after is 'The balance right after this transaction (computed by the database: the previous balance_after plus amount).';
comment on column app_public.budget_transactions.lead_id is 'The lead this transaction is about (e.g. the lead bought or refunded), if any.';
comment on column app_public.budget_transactions.description is 'What the transaction is for, in words.';
comment on column app_public.budget_transactions.created_by_user_id is 'The user who recorded it, if a user did.';
comment on column app_public.budget_transactions.created_by_api_key_id is 'The API key that recorded it, if one did.';
comment on column app_public.budget_transactions.created_at is 'When it was recorded.';

create index budget_transactions_by_lead on app_public.budget_transactions (tenant_id, lead_id) where lead_id is not null;
create index budget_transactions_by_time on app_public.budget_transactions (tenant_id, created_at);

alter table app_public.budget_accounts enable row level security;
alter table app_public.budget_accounts force row level security;
create policy owner_all on app_public.budget_accounts for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant_as_manager on app_public.budget_accounts for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('manager')));
grant select on app_public.budget_accounts to :DATABASE_VISITOR;

alter table app_public.budget_transactions enable row level security;
alter table app_public.budget_transactions force row level security;
create policy owner_all on app_public.budget_transactions for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant_as_manager on app_public.budget_transactions for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('manager')));
grant select on app_public.budget_transactions to :DATABASE_VISITOR;
-- No insert/update/delete grants: writes go through record_budget_transaction only.

create trigger _100_timestamps before insert or update on app_public.budget_accounts
  for each row execute function app_private.tg__timestamps();

create function app_private.tg_budget_transactions__append_only() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Deleting the tenant deletes its ledger (the cascade runs after the tenant row is gone).
  if TG_OP = 'DELETE' and not exists (select 1 from app_public.tenants t where t.id = OLD.tenant_id) then
    return OLD;
  end if;
  raise exception 'Budget transactions can''t be changed or deleted: record a refund or an adjustment instead'
    using errcode = '42501';
end;
$$;
comment on function app_private.tg_budget_transactions__append_only() is 'Trigger: keeps the budget ledger append-only. Refuses UPDATE, DELETE and TRUNCATE of budget_transactions with 42501, even by the owner; only the cascade from deleting the tenant itself may delete its rows.';

create trigger _010_append_only before update or delete on app_public.budget_transactions
  for each row execute function app_private.tg_budget_transactions__append_only();
create trigger _010_append_only_truncate before truncate on app_public.budget_transactions
  for each statement execute function app_private.tg_budget_transactions__append_only();

create function app_private.tg_budget_transactions__check_chain() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_account app_public.budget_accounts;
  v_previous numeric(12, 2);
begin
  -- record_budget_transaction_for_tenant updates the account first (holding its row lock), then inserts.
  select * into v_account from app_public.budget_accounts a where a.tenant_id = NEW.tenant_id;
  if v_account.tenant_id is null or NEW.seq is distinct from v_account.last_seq or NEW.balance_after is distinct from v_account.balance then
    raise exception 'Budget transactions are recorded only through record_budget_transaction: seq and balance_after must follow the budget account'
      using errcode = '23514';
  end if;
  if NEW.seq = 1 then
    v_previous := 0;
  else
    select t.balance_after into v_previous from app_public.budget_transactions t where t.tenant_id = NEW.tenant_id and t.seq = NEW.seq - 1;
  end if;
  if v_previous is null or v_previous + NEW.amount <> NEW.balance_after then
    raise exception 'Budget transaction % of this tenant does not continue the ledger: the previous balance plus the amount must equal balance_after', NEW.seq
      using errcode = '23514';
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_budget_transactions__check_chain() is 'Trigger (before insert on budget_transactions): the new row must carry the seq and balance of its budget account (updated just before in the same transaction), and balance_after must equal the previous transaction''s balance_after plus amount. Raises 23514 otherwise, so even the owner can''t write an inconsistent ledger by hand.';

create trigger _200_check_chain before insert on app_public.budget_transactions
  for each row execute function app_private.tg_budget_transactions__check_chain();

create function app_private.record_budget_transaction_for_tenant(
  tenant_id uuid,
  transaction_type text,
  amount numeric,
  lead_id uuid default null,
  description text default null,
  created_by_user_id uuid default null,
  created_by_api_key_id uuid default null
) returns app_public.budget_transactions
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_type text := pg_catalog.lower(pg_catalog.btrim(transaction_type));
  v_description text := nullif(pg_catalog.btrim(description), '');
  v_label text;
  v_account app_public.budget_accounts;
  v_transaction app_public.budget_transactions;
begin
  if tenant_id is null or not exists (select 1 from app_public.tenants t where t.id = tenant_id) then
    raise exception 'Tenant not found' using errcode = 'P0002';
  end if;
  if v_type is null or v_type not in ('deposit', 'lead_purchase', 'refund', 'adjustment') then
    raise exception 'Transaction type must be deposit, lead_purchase, refund or adjustment (got %)', coalesce(pg_catalog.quote_literal(transaction_type), 'nothing')
      using errcode = '22023';
  end if;
  v_label := pg_catalog.replace(v_type, '_', ' ');
  if amount is null or amount = 0 then
    raise exception 'Amount is required and must not be zero' using errcode = '22023';
  end if;
  if amount <> pg_catalog.round(amount, 2) then
    raise exception 'Amount must have at most 2 decimal places (got %)', amount using errcode = '22023';
  end if;
  if pg_catalog.abs(amount) >= 10000000000 then
    raise exception 'Amount must be less than 10000000000 (got %)', amount using errcode = '22023';
  end if;
  if v_type in ('deposit', 'refund') and amount < 0 then
    raise exception 'Amount of a % must be positive: it adds to the balance (got %)', v_label, amount using errcode = '22023';
  end if;
  if v_type = 'lead_purchase' and amount > 0 then
    raise exception 'Amount of a lead purchase must be negative: it is taken from the balance (got %)', amount using errcode = '22023';
  end if;
  if v_description is not null and pg_catalog.length(v_description) > 1000 then
    raise exception 'Description must be at most 1000 characters' using errcode = '22023';
  end if;
  if lead_id is not null and not exists (
    select 1 from app_public.leads l where l.tenant_id = tenant_id and l.id = lead_id
  ) then
    raise exception 'Lead not found' using errcode = 'P0002';
  end if;

  -- Lock the tenant's account row: concurrent writers of this tenant queue here, one at a time, so
  -- the balance check, balance_after and seq are exact. The first transaction creates the account
  -- (two first writers: one inserts, the other waits for it and then finds the row).
  for i in 1 .. 3 loop
    select * into v_account from app_public.budget_accounts a where a.tenant_id = tenant_id for update;
    exit when found;
    insert into app_public.budget_accounts (tenant_id) values (tenant_id) on conflict on constraint budget_accounts_pkey do nothing;
  end loop;
  if v_account.tenant_id is null then
    raise exception 'Could not open the budget account of tenant %', tenant_id using errcode = '40001';
  end if;

  if amount < 0 and not v_account.allow_negative and v_account.balance + amount < 0 then
    raise exception 'Insufficient budget: balance %, this % needs %', v_account.balance, v_label, (-amount)::numeric(12, 2)
      using errcode = '23514';
  end if;
  if pg_catalog.abs(v_account.balance + amount) >= 10000000000 then
    raise exception 'Amount would take the balance beyond the largest supported balance (9999999999.99)' using errcode = '22023';
  end if;

  update app_public.budget_accounts a
    set balance = a.balance + amount, last_seq = a.last_seq + 1
    where a.tenant_id = tenant_id
    returning a.* into v_account;

  insert into app_public.budget_transactions
    (tenant_id, seq, transaction_type, amount, balance_after, lead_id, description, created_by_user_id, created_by_api_key_id)
  values
    (tenant_id, v_account.last_seq, v_type, amount, v_account.balance, lead_id, v_description, created_by_user_id, created_by_api_key_id)
  returning * into v_transaction;
  return v_transaction;
end;
$$;
comment on function app_private.record_budget_transaction_for_tenant(uuid, text, numeric, uuid, text, uuid, uuid) is $$Records a budget transaction for the given tenant (owner only: the worker and routing use it; requests use record_budget_transaction). Locks the tenant's budget account (creating it on first use), adds amount to its balance and increments its seq, and appends the ledger row with that seq and balance_after, all in the caller's transaction. Errors: P0002 unknown tenant or lead (the lead must belong to the tenant); 22023 unknown transaction type, missing or zero amount, more than 2 decimals, wrong sign for the type (deposit and refund positive, lead_purchase negative), description over 1000 characters; 23514 "Insufficient budget: balance 12.00, this lead purchase needs 30.00" when the balance would go below zero and the account does not allow it. A refused call writes nothing.$$;

create function app_public.record_budget_transaction(
  transaction_type text,
  amount numeric,
  lead_id uuid default null,
  description text default null
) returns app_public.budget_transactions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('manager', 'record budget transactions');
begin
  return app_private.record_budget_transaction_for_tenant(
    v_tenant_id, record_budget_transaction.transaction_type, record_budget_transaction.amount,
    record_budget_transaction.lead_id, record_budget_transaction.description,
    app_public.current_user_id(), app_public.current_api_key_id());
end;
$$;
comment on function app_public.record_budget_transaction(text, numeric, uuid, text) is $$Records a transaction in your tenant's budget ledger and returns it, with its seq and the balance after it (computed by the database; concurrent calls are applied one at a time). transaction_type: deposit (amount > 0), lead_purchase (amount < 0), refund (amount > 0) or adjustment (either sign, not zero); amounts have at most 2 decimals; lead_id optionally names the lead it is about. Owners, admins and managers only. Errors: 42501 not allowed; 22023 invalid type, amount or description; P0002 lead not found; 23514 "Insufficient budget: balance 12.00, this lead purchase needs 30.00" when it would take the balance below zero and negative balances are not allowed. A refused transaction writes nothing.$$;

create function app_public.set_budget_allow_negative(allow_negative boolean) returns app_public.budget_accounts
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'change whether the budget may go negative');
  v_account app_public.budget_accounts;
begin
  if allow_negative is null then
    raise exception 'allow_negative must be true or false' using errcode = '22023';
  end if;
  insert into app_public.budget_accounts (tenant_id) values (v_tenant_id) on conflict on constraint budget_accounts_pkey do nothing;
  select * into v_account from app_public.budget_accounts a where a.tenant_id = v_tenant_id for update;
  if not allow_negative and v_account.balance < 0 then
    raise exception 'allow_negative can''t be turned off while the balance is negative (%): deposit first', v_account.balance
      using errcode = '22023';
  end if;
  update app_public.budget_accounts a set allow_negative = allow_negative
    where a.tenant_id = v_tenant_id
    returning a.* into v_account;
  return v_account;
end;
$$;
comment on function app_public.set_budget_allow_negative(boolean) is 'Sets whether your tenant''s budget may go below zero (creating the budget account if needed) and returns the account. Owners and admins only. Errors: 42501 not allowed; 22023 when turning it off while the balance is negative.';

--------------------------------------------------------------------------------
-- Lead scoring
--------------------------------------------------------------------------------
create type app_public.lead_score_result as (
  score int,
  factors jsonb
);
comment on type app_public.lead_score_result is 'A lead''s score and its breakdown, as computed by calculate_lead_score.';
comment on column app_public.lead_score_result.score is 'The score, 0 to 100 (equals factors.total).';
comment on column app_public.lead_score_result.factors is 'Points per factor: {"qualification", "engagement", "intent", "demographic", "total"}; each factor''s points are out of its weight.';

create function app_hidden.scoring_weights_problem(weights jsonb) returns text
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_key text;
  v_value jsonb;
  v_sum numeric := 0;
begin
  if weights is null or pg_catalog.jsonb_typeof(weights) <> 'object' then
    return 'scoring.weights must be a JSON object like {"qualification": 40, "engagement": 30, "intent": 20, "demographic": 10}';
  end if;
  if (select pg_catalog.array_agg(k order by k) from pg_catalog.jsonb_object_keys(weights) k)
     is distinct from array['demographic', 'engagement', 'intent', 'qualification']::text[] then
    return 'scoring.weights must have exactly the keys qualification, engagement, intent and demographic';
  end if;
  for v_key, v_value in select e.key, e.value from pg_catalog.jsonb_each(weights) e loop
    if pg_catalog.jsonb_typeof(v_value) <> 'number' or v_value::text::numeric <> pg_catalog.trunc(v_value::text::numeric)
       or v_value::text::numeric < 0 then
      return pg_catalog.format('scoring.weights.%s must be a whole number of points, 0 or more', v_key);
    end if;
    v_sum := v_sum + v_value::text::numeric;
  end loop;
  if v_sum <> 100 then
    return pg_catalog.format('scoring.weights must add up to 100 (they add up to %s)', v_sum);
  end if;
  return null;
end;
$$;
comment on function app_hidden.scoring_weights_problem(jsonb) is 'Why a scoring.weights value is invalid, or null when it is valid: an object with exactly the integer keys qualification, engagement, intent and demographic, each 0 or more, adding up to 100.';

create function app_hidden.lead_scoring_weights(tenant_id uuid) returns jsonb
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(
    (select c.value from app_public.system_config c
      where c.tenant_id = lead_scoring_weights.tenant_id and c.key = 'scoring.weights'
        and app_hidden.scoring_weights_problem(c.value) is null),
    '{"qualification": 40, "engagement": 30, "intent": 20, "demographic": 10}'::jsonb
  );
$$;
comment on function app_hidden.lead_scoring_weights(uuid) is 'The tenant''s lead scoring weights: system_config scoring.weights, or the defaults {"qualification": 40, "engagement": 30, "intent": 20, "demographic": 10} when it is not set. Reads with the caller''s privileges (row-level security applies).';

create function app_public.calculate_lead_score(lead app_public.leads) returns app_public.lead_score_result
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_weights jsonb := app_hidden.lead_scoring_weights(lead.tenant_id);
  v_tenant app_public.tenants;
  v_qualification int;
  v_engagement int;
  v_intent int;
  v_demographic int;
  v_status_changes int;
  v_other_activity int;
  v_service_area int := 15;
  v_lat double precision;
  v_lng double precision;
  v_miles double precision;
  q int; e int; i int; d int;
begin
  -- Qualification: contact completeness (60) + status progress (40).
  v_qualification :=
      (case when pg_catalog.btrim(coalesce(lead.first_name, '')) <> '' or pg_catalog.btrim(coalesce(lead.last_name, '')) <> '' then 15 else 0 end)
    + (case when lead.phone is not null then 15 else 0 end)
    + (case when lead.email is not null then 15 else 0 end)
    + (case when pg_catalog.btrim(coalesce(lead.address, '')) <> '' then 15 else 0 end)
    + (case lead.status
         when 'cold' then 5 when 'contacted' then 15 when 'nurturing' then 15 when 'qualified' then 30
         when 'hot' then 40 when 'won' then 40 when 'recruited' then 40
         else 0 end);

  -- Engagement: recency of the last contact (50) + activity in the last 30 days (50).
  select pg_catalog.count(*) into v_status_changes
    from app_public.lead_status_history h
    where h.tenant_id = lead.tenant_id and h.lead_id = lead.id and h.from_status is not null
      and h.changed_at >= pg_catalog.now() - interval '30 days';
  select pg_catalog.count(*) into v_other_activity
    from app_public.lead_audit_log a
    where a.tenant_id = lead.tenant_id and a.lead_id = lead.id
      and a.field_name not in ('status', 'lead_score', 'lead_score_factors', 'updated_at', '*created*')
      and a.changed_at >= pg_catalog.now() - interval '30 days';
  v_engagement :=
      (case
         when lead.last_contact_at is null then 0
         when lead.last_contact_at >= pg_catalog.now() - interval '1 day' then 50
         when lead.last_contact_at >= pg_catalog.now() - interval '3 days' then 40
         when lead.last_contact_at >= pg_catalog.now() - interval '7 days' then 30
         when lead.last_contact_at >= pg_catalog.now() - interval '14 days' then 20
         when lead.last_contact_at >= pg_catalog.now() - interval '30 days' then 10
         else 0 end)
    + least(50, 10 * v_status_changes + 5 * v_other_activity);

  -- Intent: urgency (30) + estimated value (20) + appointment (20) + event soon (15) + problem described (15).
  v_intent :=
      (case lead.urgency when 'normal' then 10 when 'high' then 20 when 'emergency' then 30 else 0 end)
    + (case
         when lead.estimated_value is null or lead.estimated_value <= 0 then 0
         when lead.estimated_value < 500 then 5
         when lead.estimated_value < 2000 then 10
         when lead.estimated_value < 10000 then 15
         else 20 end)
    + (case when lead.appointment_at is not null then 20 else 0 end)
    + (case when lead.event_date between current_date and current_date + 90 then 15 else 0 end)
    + (case when pg_catalog.btrim(coalesce(lead.problem_description, '')) <> '' then 15 else 0 end);

  -- Demographic: location (20) + postal code (20) + language (10) + segment (20) + service area (30).
  if pg_catalog.jsonb_typeof(lead.attributes -> 'latitude') = 'number' and pg_catalog.jsonb_typeof(lead.attributes -> 'longitude') = 'number' then
    v_lat := (lead.attributes ->> 'latitude')::double precision;
    v_lng := (lead.attributes ->> 'longitude')::double precision;
    select * into v_tenant from app_public.tenants t where t.id = lead.tenant_id;
    if v_lat between -90 and 90 and v_lng between -180 and 180
       and v_tenant.business_latitude is not null and v_tenant.business_longitude is not null then
      -- Great-circle distance (haversine), in miles.
      v_miles := 2 * 3958.8 * pg_catalog.asin(pg_catalog.sqrt(
          pg_catalog.power(pg_catalog.sin(pg_catalog.radians(v_lat - v_tenant.business_latitude::double precision) / 2), 2)
        + pg_catalog.cos(pg_catalog.radians(v_tenant.business_latitude::double precision)) * pg_catalog.cos(pg_catalog.radians(v_lat))
          * pg_catalog.power(pg_catalog.sin(pg_catalog.radians(v_lng - v_tenant.business_longitude::double precision) / 2), 2)));
      v_service_area := case when v_miles <= v_tenant.service_area_radius then 30 else 0 end;
    end if;
  end if;
  v_demographic :=
      (case when pg_catalog.btrim(coalesce(lead.city, '')) <> '' or pg_catalog.btrim(coalesce(lead.region, '')) <> '' then 20 else 0 end)
    + (case when pg_catalog.btrim(coalesce(lead.postal_code, '')) <> '' then 20 else 0 end)
    + (case when lead.language is not null and lead.language <> 'und' then 10 else 0 end)
    + (case when pg_catalog.btrim(coalesce(lead.customer_segment, '')) <> '' then 20 else 0 end)
    + v_service_area;

  -- Points: each factor's raw 0–100 scaled to its weight, rounded half away from zero.
  q := pg_catalog.round((v_weights ->> 'qualification')::numeric * v_qualification / 100)::int;
  e := pg_catalog.round((v_weights ->> 'engagement')::numeric * v_engagement / 100)::int;
  i := pg_catalog.round((v_weights ->> 'intent')::numeric * v_intent / 100)::int;
  d := pg_catalog.round((v_weights ->> 'demographic')::numeric * v_demographic / 100)::int;
  return (q + e + i + d,
          pg_catalog.jsonb_build_object('qualification', q, 'engagement', e, 'intent', i, 'demographic', d, 'total', q + e + i + d)
         )::app_public.lead_score_result;
end;
$$;
comment on function app_public.calculate_lead_score(app_public.leads) is $$The lead's score (0–100) and its breakdown, from its data and recent activity, with the tenant's weights (system_config scoring.weights; default qualification 40, engagement 30, intent 20, demographic 10; they add up to 100).

Each factor first gets raw points from 0 to 100:
- qualification = contact completeness (name 15, phone 15, email 15, address 15) + status (new 0, cold 5, contacted 15, nurturing 15, qualified 30, hot 40, won 40, recruited 40, lost 0, dnc 0).
- engagement = recency of last_contact_at (within 1 day 50, 3 days 40, 7 days 30, 14 days 20, 30 days 10, older or never 0) + activity in the last 30 days, at most 50: 10 per status change (lead_status_history, not counting creation) and 5 per other recorded field change (lead_audit_log, not counting status, lead_score, lead_score_factors, updated_at and *created*).
- intent = urgency (low 0, normal 10, high 20, emergency 30) + estimated_value (none or 0: 0, under 500: 5, under 2000: 10, under 10000: 15, 10000 or more: 20) + appointment_at set 20 + event_date from today to 90 days ahead 15 + problem_description given 15.
- demographic = city or region 20 + postal_code 20 + language known (not "und") 10 + customer_segment 20 + service area 30 (inside the tenant's service_area_radius from its business coordinates, by great-circle distance to the lead's attributes.latitude/longitude: 30; outside: 0; unknown, because either location is missing: 15).

Points of a factor = round(weight × raw / 100), half away from zero, so 0 ≤ points ≤ weight; total = the sum of the four points, 0 to 100, and score = total.

Pure calculation: it changes nothing. leads.lead_score is kept up to date by the lead__score job (refresh_lead_score), which freezes the score of leads in a final status (won, recruited, lost, dnc).$$;

create function app_private.refresh_lead_score(lead_id uuid) returns int
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_lead app_public.leads;
  v_result app_public.lead_score_result;
  v_source text := pg_catalog.current_setting('app.change_source', true);
begin
  -- Lock the lead so concurrent refreshes (lead__score and lead__score_tenant) apply one at a time.
  select * into v_lead from app_public.leads l where l.id = refresh_lead_score.lead_id for no key update;
  if v_lead.id is null then
    return null;
  end if;
  -- Deleted leads keep their score; so do leads in a final status once they have been scored (the
  -- score they had when they closed is what score-to-outcome reports need).
  if v_lead.deleted_at is not null
     or (v_lead.lead_score_factors <> '{}'::jsonb
         and exists (select 1 from app_public.lead_statuses s where s.status = v_lead.status and s.is_final)) then
    return v_lead.lead_score;
  end if;
  v_result := app_public.calculate_lead_score(v_lead);
  if v_result.score is distinct from v_lead.lead_score or v_result.factors is distinct from v_lead.lead_score_factors then
    perform pg_catalog.set_config('app.change_source', 'system', true);
    update app_public.leads l
      set lead_score = v_result.score, lead_score_factors = v_result.factors
      where l.id = v_lead.id;
    perform pg_catalog.set_config('app.change_source', coalesce(v_source, ''), true);
  end if;
  return v_result.score;
end;
$$;
comment on function app_private.refresh_lead_score(uuid) is 'Recalculates a lead''s score with calculate_lead_score and writes leads.lead_score and lead_score_factors only when they change (the change is recorded in lead_score_history by the history trigger, with change source system). Soft-deleted leads, and leads in a final status (won, recruited, lost, dnc) that were already scored, keep their score. Returns the score, or null when the lead does not exist. Idempotent. Run by the lead__score job; owner only.';

create function app_private.refresh_tenant_lead_scores(tenant_id uuid, after_lead_id uuid default null, batch_size integer default 200)
  returns uuid
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id uuid;
  v_last uuid;
begin
  for v_id in
    select l.id from app_public.leads l
    where l.tenant_id = refresh_tenant_lead_scores.tenant_id and l.deleted_at is null
      and (refresh_tenant_lead_scores.after_lead_id is null or l.id > refresh_tenant_lead_scores.after_lead_id)
    order by l.id
    limit greatest(1, least(coalesce(refresh_tenant_lead_scores.batch_size, 200), 5000))
  loop
    -- A lead locked by someone else's open transaction is not waited for (waiting while holding this
    -- batch's earlier locks could deadlock with a request): it gets its own lead__score job instead.
    perform 1 from app_public.leads l where l.id = v_id for no key update skip locked;
    if found then
      perform app_private.refresh_lead_score(v_id);
    else
      perform app_private.add_job('lead__score', pg_catalog.json_build_object('lead_id', v_id), job_key => 'lead_score:' || v_id::text);
    end if;
    v_last := v_id;
  end loop;
  return v_last;
end;
$$;
comment on function app_private.refresh_tenant_lead_scores(uuid, uuid, integer) is 'Rescores one batch of the tenant''s live leads (ids after after_lead_id, in id order, at most batch_size, default 200) with refresh_lead_score; a lead locked by another transaction is not waited for but gets its own lead__score job. Returns the last lead id handled (pass it as after_lead_id for the next batch), or null when there were none left. Run in a loop, one batch per transaction, by the lead__score_tenant job; owner only.';

-- Weights: validated on write; a change rescores the tenant's leads in the background.
create function app_private.tg_system_config__validate_scoring_weights() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_problem text;
begin
  if NEW.value_type is distinct from 'json' then
    raise exception 'scoring.weights must have value_type json' using errcode = '22023';
  end if;
  v_problem := app_hidden.scoring_weights_problem(NEW.value);
  if v_problem is not null then
    raise exception '%', v_problem using errcode = '22023';
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_system_config__validate_scoring_weights() is 'Trigger (before insert or update of system_config key scoring.weights): raises 22023 unless the value is a json object with exactly the whole-number keys qualification, engagement, intent and demographic, each 0 or more, adding up to 100.';

create trigger _200_validate_scoring_weights before insert or update on app_public.system_config
  for each row when (NEW.key = 'scoring.weights')
  execute function app_private.tg_system_config__validate_scoring_weights();

create function app_private.tg_system_config__enqueue_lead_rescore() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid;
begin
  if TG_OP = 'INSERT' then
    if NEW.key <> 'scoring.weights' then return null; end if;
    v_tenant_id := NEW.tenant_id;
  elsif TG_OP = 'DELETE' then
    if OLD.key <> 'scoring.weights' then return null; end if;
    v_tenant_id := OLD.tenant_id;
  else
    if not ('scoring.weights' in (OLD.key, NEW.key)) or (OLD.key = NEW.key and OLD.value = NEW.value and OLD.tenant_id = NEW.tenant_id) then
      return null;
    end if;
    v_tenant_id := NEW.tenant_id;
  end if;
  -- Nothing to rescore when the config goes because the tenant is being deleted.
  if exists (select 1 from app_public.tenants t where t.id = v_tenant_id) then
    perform app_private.add_job('lead__score_tenant', pg_catalog.json_build_object('tenant_id', v_tenant_id),
      job_key => 'lead_score_tenant:' || v_tenant_id::text);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_system_config__enqueue_lead_rescore() is 'AFTER trigger on system_config: when scoring.weights is added, changed or removed, enqueues lead__score_tenant {tenant_id} (job key lead_score_tenant:<tenant_id>, so repeated changes queue one run).';

create trigger _900_enqueue_lead_rescore after insert or update or delete on app_public.system_config
  for each row execute function app_private.tg_system_config__enqueue_lead_rescore();

create function app_private.tg_tenants__enqueue_lead_rescore() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.add_job('lead__score_tenant', pg_catalog.json_build_object('tenant_id', NEW.id),
    job_key => 'lead_score_tenant:' || NEW.id::text);
  return null;
end;
$$;
comment on function app_private.tg_tenants__enqueue_lead_rescore() is 'AFTER trigger on tenants: the service area (business coordinates or radius) changed, so enqueue lead__score_tenant {tenant_id} to rescore the tenant''s leads (demographic factor).';

create trigger _900_enqueue_lead_rescore after update of business_latitude, business_longitude, service_area_radius on app_public.tenants
  for each row
  when ((OLD.business_latitude, OLD.business_longitude, OLD.service_area_radius)
        is distinct from (NEW.business_latitude, NEW.business_longitude, NEW.service_area_radius))
  execute function app_private.tg_tenants__enqueue_lead_rescore();

-- Leads: a new lead, or a change to what the score is computed from, queues lead__score (never inline).
create function app_private.tg_leads__enqueue_lead_score() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.add_job('lead__score', pg_catalog.json_build_object('lead_id', NEW.id),
    job_key => 'lead_score:' || NEW.id::text);
  return null;
end;
$$;
comment on function app_private.tg_leads__enqueue_lead_score() is 'AFTER trigger on leads: enqueues lead__score {lead_id} with job key lead_score:<lead_id> (several changes before it runs make one job). Fires on insert and on changes to the scoring inputs only, never on lead_score itself.';

create trigger _900_enqueue_lead_score_on_insert after insert on app_public.leads
  for each row execute function app_private.tg_leads__enqueue_lead_score();
create trigger _900_enqueue_lead_score_on_update
  after update of first_name, last_name, phone, email, address, city, region, postal_code, status, last_contact_at,
    problem_description, urgency, estimated_value, event_date, appointment_at, customer_segment, language, attributes, deleted_at
  on app_public.leads
  for each row
  when ((OLD.first_name, OLD.last_name, OLD.phone, OLD.email, OLD.address, OLD.city, OLD.region, OLD.postal_code, OLD.status,
         OLD.last_contact_at, OLD.problem_description, OLD.urgency, OLD.estimated_value, OLD.event_date, OLD.appointment_at,
         OLD.customer_segment, OLD.language, OLD.attributes -> 'latitude', OLD.attributes -> 'longitude', OLD.deleted_at)
        is distinct from
        (NEW.first_name, NEW.last_name, NEW.phone, NEW.email, NEW.address, NEW.city, NEW.region, NEW.postal_code, NEW.status,
         NEW.last_contact_at, NEW.problem_description, NEW.urgency, NEW.estimated_value, NEW.event_date, NEW.appointment_at,
         NEW.customer_segment, NEW.language, NEW.attributes -> 'latitude', NEW.attributes -> 'longitude', NEW.deleted_at))
  execute function app_private.tg_leads__enqueue_lead_score();

--------------------------------------------------------------------------------
-- Function privileges for requests
--------------------------------------------------------------------------------
grant execute on function
  app_public.record_budget_transaction(text, numeric, uuid, text),
  app_public.set_budget_allow_negative(boolean),
  app_public.calculate_lead_score(app_public.leads),
  app_hidden.scoring_weights_problem(jsonb),
  app_hidden.lead_scoring_weights(uuid)
to :DATABASE_VISITOR;

--! split: 050-import.sql
--------------------------------------------------------------------------------
-- Bulk import of leads (CSV through the CLI or the importLeads mutation).
-- TypeScript parses the file and normalises phone numbers (libphonenumber); everything else —
-- permissions, deduplication, merging, validation, counting — happens here, row by row, each row
-- in its own sub-transaction so a bad row is recorded as rejected and never stops the good ones.
-- Idempotent: drops what it creates (graphile-migrate re-runs current/ on change).
--------------------------------------------------------------------------------

drop function if exists app_public.start_import(text, text, text);
drop function if exists app_public.import_rows(uuid, jsonb);
drop function if exists app_public.finish_import(uuid);
drop function if exists app_private.start_import(uuid, text, text, text, uuid);
drop function if exists app_private.import_lead_rows(uuid, uuid, jsonb);
drop function if exists app_private.finish_import(uuid, uuid);
drop function if exists app_private.fail_import(uuid, uuid, text);
drop function if exists app_private.import_lead_row(app_public.import_batches, jsonb);
drop function if exists app_private.import_lead_fields();
drop table if exists app_public.import_batch_rows, app_public.import_batches cascade;

--------------------------------------------------------------------------------
-- Tables (read-only for tenant members; written by the functions below)
--------------------------------------------------------------------------------
create table app_public.import_batches (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  source_name text not null default 'import',
  mode text not null default 'skip',
  default_country text not null default 'US',
  status text not null default 'running',
  row_count int not null default 0,
  created_count int not null default 0,
  merged_count int not null default 0,
  skipped_count int not null default 0,
  rejected_count int not null default 0,
  failure_reason text,
  created_by_user_id uuid,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  constraint import_batches_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint import_batches_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint import_batches_creator_must_exist foreign key (created_by_user_id) references app_public.users (id) on delete set null,
  constraint import_batches_source_name_must_not_be_blank check (pg_catalog.btrim(source_name) <> '' and pg_catalog.length(source_name) <= 200),
  constraint import_batches_mode_must_be_merge_or_skip check (mode in ('merge', 'skip')),
  constraint import_batches_default_country_must_be_an_iso_code check (default_country ~ '^[A-Z]{2}$'),
  constraint import_batches_status_must_be_known check (status in ('running', 'completed', 'failed')),
  constraint import_batches_counts_must_add_up check (
    created_count >= 0 and merged_count >= 0 and skipped_count >= 0 and rejected_count >= 0
    and row_count = created_count + merged_count + skipped_count + rejected_count),
  constraint import_batches_finished_at_must_match_status check ((status = 'running') = (finished_at is null)),
  constraint import_batches_failure_reason_only_when_failed check (failure_reason is null or status = 'failed')
);
comment on table app_public.import_batches is $$One bulk import of leads (a CSV file through `npm run import` or the importLeads mutation): its options, progress and outcome. Every row of the file is recorded in import_batch_rows with what happened to it. Written only by start_import, import_rows and finish_import (managers and up).
@behavior -insert -update -delete$$;
comment on column app_public.import_batches.id is 'The import''s id.';
comment on column app_public.import_batches.tenant_id is 'The tenant the leads were imported into.';
comment on column app_public.import_batches.source_name is 'A name for the import, e.g. the file name.';
comment on column app_public.import_batches.mode is 'What happens to a row whose phone (or, without a phone, email) matches a live lead: skip (leave the lead alone) or merge (fill the lead''s empty fields and add the row''s tags).';
comment on column app_public.import_batches.default_country is 'Two-letter country code used for phone numbers written without a country code, and for rows without a country.';
comment on column app_public.import_batches.status is 'running while rows are being sent, completed when finished, failed when the import stopped early (see failure_reason).';
comment on column app_public.import_batches.row_count is 'Rows processed so far (created + merged + skipped + rejected).';
comment on column app_public.import_batches.created_count is 'Rows that created a new lead.';
comment on column app_public.import_batches.merged_count is 'Rows merged into an existing lead (mode merge).';
comment on column app_public.import_batches.skipped_count is 'Rows skipped because the lead already exists (mode skip).';
comment on column app_public.import_batches.rejected_count is 'Rows that could not be imported; each has its reason in import_batch_rows.';
comment on column app_public.import_batches.failure_reason is 'Why the import stopped early, when status is failed.';
comment on column app_public.import_batches.created_by_user_id is 'The user who started the import (null for the command line or an API key).';
comment on column app_public.import_batches.started_at is 'When the import started.';
comment on column app_public.import_batches.finished_at is 'When the import completed or failed; null while running.';
create index import_batches_by_tenant on app_public.import_batches (tenant_id, started_at desc);
create index import_batches_by_creator on app_public.import_batches (created_by_user_id) where created_by_user_id is not null;

create table app_public.import_batch_rows (
  id bigint generated always as identity primary key,
  tenant_id uuid not null,
  batch_id uuid not null,
  row_number int not null,
  raw jsonb not null default '{}',
  result text not null,
  lead_id uuid,
  reason text,
  created_at timestamptz not null default now(),
  constraint import_batch_rows_batch_must_exist foreign key (tenant_id, batch_id)
    references app_public.import_batches (tenant_id, id) on delete cascade,
  constraint import_batch_rows_row_number_must_be_unique_per_batch unique (tenant_id, batch_id, row_number),
  constraint import_batch_rows_lead_must_exist foreign key (tenant_id, lead_id)
    references app_public.leads (tenant_id, id) on delete set null (lead_id),
  constraint import_batch_rows_row_number_must_be_positive check (row_number > 0),
  constraint import_batch_rows_result_must_be_known check (result in ('created', 'merged', 'skipped', 'rejected')),
  constraint import_batch_rows_rejected_rows_need_a_reason check (result <> 'rejected' or reason is not null)
);
comment on table app_public.import_batch_rows is $$One row of an import and what happened to it: created a lead, merged into an existing one, skipped as a duplicate, or rejected (with the reason). Written only by import_rows.
@behavior -insert -update -delete$$;
comment on column app_public.import_batch_rows.id is 'Sequence number.';
comment on column app_public.import_batch_rows.tenant_id is 'The tenant of the import.';
comment on column app_public.import_batch_rows.batch_id is 'The import this row belongs to.';
comment on column app_public.import_batch_rows.row_number is 'The row''s number in the file as a spreadsheet shows it (the header is row 1, so the first lead is row 2).';
comment on column app_public.import_batch_rows.raw is 'The row as it was in the file (column name to value).';
comment on column app_public.import_batch_rows.result is 'created (a new lead), merged (into an existing lead), skipped (duplicate of an existing lead) or rejected (see reason).';
comment on column app_public.import_batch_rows.lead_id is 'The lead the row created, was merged into or duplicated; null when rejected.';
comment on column app_public.import_batch_rows.reason is 'Why the row was rejected (or which existing lead it matched), in words.';
comment on column app_public.import_batch_rows.created_at is 'When the row was processed.';
create index import_batch_rows_by_lead on app_public.import_batch_rows (tenant_id, lead_id) where lead_id is not null;

alter table app_public.import_batches enable row level security;
alter table app_public.import_batches force row level security;
create policy owner_all on app_public.import_batches for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.import_batches for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.import_batches to :DATABASE_VISITOR;

alter table app_public.import_batch_rows enable row level security;
alter table app_public.import_batch_rows force row level security;
create policy owner_all on app_public.import_batch_rows for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.import_batch_rows for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.import_batch_rows to :DATABASE_VISITOR;

--------------------------------------------------------------------------------
-- Owner-level core (app_private): explicit tenant, no permission checks (callers check).
--------------------------------------------------------------------------------

create function app_private.import_lead_fields() returns text[]
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select array['first_name', 'last_name', 'phone', 'email', 'address', 'city', 'region', 'postal_code', 'country',
    'timezone', 'source', 'tags', 'status', 'problem_description', 'job_type', 'urgency', 'estimated_value',
    'event_date', 'event_type', 'service_line', 'customer_segment', 'language', 'attributes']::text[];
$$;
comment on function app_private.import_lead_fields() is 'The lead fields an import row may set. Everything else about a lead (owner, score, status history…) is managed elsewhere.';

create function app_private.start_import(
  tenant_id uuid,
  source_name text,
  mode text default 'skip',
  default_country text default 'US',
  created_by_user_id uuid default null
) returns app_public.import_batches
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_mode text := pg_catalog.lower(pg_catalog.btrim(coalesce(mode, 'skip')));
  v_country text := pg_catalog.upper(pg_catalog.btrim(coalesce(default_country, 'US')));
  v_name text := coalesce(nullif(pg_catalog.btrim(source_name), ''), 'import');
  v_batch app_public.import_batches;
begin
  if tenant_id is null or not exists (select 1 from app_public.tenants t where t.id = tenant_id) then
    raise exception 'Tenant % not found', coalesce(tenant_id::text, '(none)') using errcode = 'P0002';
  end if;
  if v_mode not in ('merge', 'skip') then
    raise exception 'Invalid mode ''%'': use merge or skip', mode using errcode = '22023';
  end if;
  if v_country !~ '^[A-Z]{2}$' then
    raise exception 'Invalid default country ''%'': use a two-letter country code such as US', default_country using errcode = '22023';
  end if;
  if pg_catalog.length(v_name) > 200 then
    raise exception 'Invalid source name: use at most 200 characters' using errcode = '22023';
  end if;
  insert into app_public.import_batches (tenant_id, source_name, mode, default_country, created_by_user_id)
    values (tenant_id, v_name, v_mode, v_country, created_by_user_id)
    returning * into v_batch;
  return v_batch;
end;
$$;
comment on function app_private.start_import(uuid, text, text, text, uuid) is 'Starts an import into the given tenant (mode skip or merge, default country for phones without a country code) and returns the batch. No permission check: for the command line (owner connection) and app_public.start_import. Errors: P0002 unknown tenant; 22023 bad mode, country or name.';

create function app_private.import_lead_row(batch app_public.import_batches, item jsonb) returns app_public.import_batch_rows
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row_number int := (item ->> 'row_number')::numeric::int;
  v_raw jsonb := coalesce(item -> 'raw', '{}'::jsonb);
  v_lead jsonb := item -> 'lead';
  v_error text := nullif(pg_catalog.btrim(item ->> 'error'), '');
  v_unknown text;
  v_new app_public.leads;
  v_old app_public.leads;
  v_merged app_public.leads;
  v_lead_id uuid;
  v_result text;
  v_reason text;
  v_match text;
  v_attempt int := 0;
  v_out app_public.import_batch_rows;
  v_state text;
  v_constraint text;
begin
  if v_error is null and (v_lead is null or pg_catalog.jsonb_typeof(v_lead) <> 'object') then
    v_error := 'The row has no lead data';
  end if;

  <<attempts>>
  while v_error is null loop
    v_attempt := v_attempt + 1;
    begin
      -- Blank strings and JSON nulls mean "not given".
      select coalesce(pg_catalog.jsonb_object_agg(e.key, e.value), '{}'::jsonb) into v_lead
      from pg_catalog.jsonb_each(item -> 'lead') e
      where e.value <> 'null'::jsonb
        and not (pg_catalog.jsonb_typeof(e.value) = 'string' and pg_catalog.btrim(e.value #>> '{}') = '');
      select pg_catalog.string_agg(k, ', ' order by k) into v_unknown
      from pg_catalog.jsonb_object_keys(v_lead) k
      where k <> all (app_private.import_lead_fields());
      if v_unknown is not null then
        raise exception 'Unknown lead field(s): %', v_unknown using errcode = '22023';
      end if;
      -- Types, casts and the E.164 domain are checked here; the table's constraints on insert.
      v_new := pg_catalog.jsonb_populate_record(null::app_public.leads, v_lead);
      v_match := case when v_new.phone is not null then 'phone' else 'email' end;

      -- Concurrent imports: a lock per email (whenever the row has one), so an email-only row and a row
      -- with a phone and the same email don't both create a lead. Phones rely on the unique index.
      if v_new.email is not null then
        perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(
          'import:' || batch.tenant_id::text || ':' || pg_catalog.lower(v_new.email::text), 0));
      end if;

      -- The live lead this row duplicates, if any: same phone; without a phone, same email (oldest first).
      if v_new.phone is not null then
        select * into v_old from app_public.leads l
          where l.tenant_id = batch.tenant_id and l.phone = v_new.phone and l.deleted_at is null
          for update;
      elsif v_new.email is not null then
        select * into v_old from app_public.leads l
          where l.tenant_id = batch.tenant_id and l.email = v_new.email and l.deleted_at is null
          order by l.created_at, l.id
          limit 1
          for update;
      end if;

      v_lead_id := null;
      if v_old.id is null then
        insert into app_public.leads (tenant_id, first_name, last_name, phone, email, address, city, region, postal_code,
          country, timezone, source, tags, status, problem_description, job_type, urgency, estimated_value, event_date,
          event_type, service_line, customer_segment, language, attributes)
        values (batch.tenant_id, v_new.first_name, v_new.last_name, v_new.phone, v_new.email, v_new.address, v_new.city,
          v_new.region, v_new.postal_code, coalesce(v_new.country, batch.default_country), v_new.timezone,
          coalesce(v_new.source, 'import'), coalesce(v_new.tags, '{}'), coalesce(v_new.status, 'new'),
          v_new.problem_description, v_new.job_type, coalesce(v_new.urgency, 'normal'), v_new.estimated_value,
          v_new.event_date, v_new.event_type, v_new.service_line, v_new.customer_segment, coalesce(v_new.language, 'en'),
          coalesce(v_new.attributes, '{}'))
        on conflict (tenant_id, phone) where deleted_at is null and phone is not null do nothing
        returning id into v_lead_id;
        if v_lead_id is null then
          -- Another import inserted this phone and committed while we waited: look again.
          raise exception 'A lead with phone % was created at the same time', v_new.phone using errcode = '23505';
        end if;
        v_result := 'created';
      elsif batch.mode = 'skip' then
        v_lead_id := v_old.id;
        v_result := 'skipped';
        v_reason := pg_catalog.format('A lead with this %s already exists', v_match);
      else
        v_lead_id := v_old.id;
        v_result := 'merged';
        v_reason := pg_catalog.format('Merged into the lead with this %s', v_match);
        -- Fill what the lead is missing, add the row's new tags; the lead's own attributes win.
        v_merged := v_old;
        v_merged.first_name := coalesce(v_old.first_name, v_new.first_name);
        v_merged.last_name := coalesce(v_old.last_name, v_new.last_name);
        v_merged.email := coalesce(v_old.email, v_new.email);
        v_merged.address := coalesce(v_old.address, v_new.address);
        v_merged.city := coalesce(v_old.city, v_new.city);
        v_merged.region := coalesce(v_old.region, v_new.region);
        v_merged.postal_code := coalesce(v_old.postal_code, v_new.postal_code);
        v_merged.timezone := coalesce(v_old.timezone, v_new.timezone);
        v_merged.problem_description := coalesce(v_old.problem_description, v_new.problem_description);
        v_merged.job_type := coalesce(v_old.job_type, v_new.job_type);
        v_merged.estimated_value := coalesce(v_old.estimated_value, v_new.estimated_value);
        v_merged.event_date := coalesce(v_old.event_date, v_new.event_date);
        v_merged.event_type := coalesce(v_old.event_type, v_new.event_type);
        v_merged.service_line := coalesce(v_old.service_line, v_new.service_line);
        v_merged.customer_segment := coalesce(v_old.customer_segment, v_new.customer_segment);
        v_merged.tags := v_old.tags || array(
          select u.t from pg_catalog.unnest(coalesce(v_new.tags, '{}')) with ordinality u(t, i)
          where u.t <> all (v_old.tags)
          group by u.t order by pg_catalog.min(u.i));
        v_merged.attributes := coalesce(v_new.attributes, '{}') || v_old.attributes;
        if v_merged is distinct from v_old then
          update app_public.leads l set
            first_name = v_merged.first_name, last_name = v_merged.last_name, email = v_merged.email,
            address = v_merged.address, city = v_merged.city, region = v_merged.region, postal_code = v_merged.postal_code,
            timezone = v_merged.timezone, problem_description = v_merged.problem_description, job_type = v_merged.job_type,
            estimated_value = v_merged.estimated_value, event_date = v_merged.event_date, event_type = v_merged.event_type,
            service_line = v_merged.service_line, customer_segment = v_merged.customer_segment, tags = v_merged.tags,
            attributes = v_merged.attributes
          where l.tenant_id = batch.tenant_id and l.id = v_old.id;
        end if;
      end if;

      insert into app_public.import_batch_rows (tenant_id, batch_id, row_number, raw, result, lead_id, reason)
        values (batch.tenant_id, batch.id, v_row_number, v_raw, v_result, v_lead_id, v_reason)
        returning * into v_out;
      return v_out;
    exception
      -- Conflicts with a concurrent transaction are not the row's fault: the caller retries the chunk.
      when deadlock_detected or serialization_failure or lock_not_available then
        raise;
      -- A concurrent import created the same phone between our look-up and our insert: look again.
      when unique_violation then
        get stacked diagnostics v_error = message_text;
        v_old := null;
        if v_attempt < 3 then
          v_error := null;
        end if;
      when others then
        get stacked diagnostics v_state = returned_sqlstate, v_error = message_text, v_constraint = constraint_name;
        -- Constraint names read as sentences (leads_email_must_look_like_an_email -> "Leads email must look like an email.").
        if v_state like '23%' and coalesce(v_constraint, '') <> '' then
          v_error := pg_catalog.upper(pg_catalog.left(v_constraint, 1))
            || pg_catalog.replace(pg_catalog.substr(v_constraint, 2), '_', ' ') || '.';
        end if;
    end;
  end loop;

  insert into app_public.import_batch_rows (tenant_id, batch_id, row_number, raw, result, reason)
    values (batch.tenant_id, batch.id, v_row_number, v_raw, 'rejected', v_error)
    returning * into v_out;
  return v_out;
end;
$$;
comment on function app_private.import_lead_row(app_public.import_batches, jsonb) is 'Imports one normalised row ({row_number, raw, lead, error}) into the batch''s tenant in its own sub-transaction and records the outcome: created; merged or skipped when a live lead has the same phone (or, for a row without a phone, the same email); or rejected with the reason (the row''s error, a bad value, a constraint). Internal to import_lead_rows.';

create function app_private.import_lead_rows(tenant_id uuid, batch_id uuid, rows jsonb) returns app_public.import_batches
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_batch app_public.import_batches;
  v_item jsonb;
  v_index int;
  v_row app_public.import_batch_rows;
  v_previous_source text := pg_catalog.current_setting('app.change_source', true);
  v_duplicate int;
  v_done int[];
  v_created int := 0;
  v_merged int := 0;
  v_skipped int := 0;
  v_rejected int := 0;
begin
  if rows is null or pg_catalog.jsonb_typeof(rows) <> 'array' then
    raise exception 'Invalid rows: send a JSON array of {row_number, raw, lead, error}' using errcode = '22023';
  end if;
  if pg_catalog.jsonb_array_length(rows) > 5000 then
    raise exception 'Invalid rows: at most 5000 rows per call (got %); send the file in chunks', pg_catalog.jsonb_array_length(rows)
      using errcode = '22023';
  end if;
  for v_item, v_index in select e.value, e.ordinality from pg_catalog.jsonb_array_elements(rows) with ordinality e loop
    if pg_catalog.jsonb_typeof(v_item) <> 'object'
       or pg_catalog.jsonb_typeof(v_item -> 'row_number') <> 'number'
       or (v_item ->> 'row_number')::numeric <> pg_catalog.trunc((v_item ->> 'row_number')::numeric)
       or (v_item ->> 'row_number')::numeric not between 1 and 2147483647 then
      raise exception 'Invalid rows: element % needs a row_number that is a positive whole number', v_index using errcode = '22023';
    end if;
  end loop;
  select (e.value ->> 'row_number')::numeric::int into v_duplicate
  from pg_catalog.jsonb_array_elements(rows) e
  group by 1 having pg_catalog.count(*) > 1
  limit 1;
  if v_duplicate is not null then
    raise exception 'Invalid rows: row_number % appears more than once', v_duplicate using errcode = '22023';
  end if;

  -- Imports into one tenant take turns (a transaction-level lock per tenant, always taken first).
  -- The per-row guards in import_lead_row (the phone's unique index, the lock per email) already make
  -- each lead be created once; but two imports that hold the locks of earlier rows while asking for
  -- later ones, with the same leads in a different order (duplicates within a file, different chunk
  -- sizes), would deadlock. Imports into different tenants still run in parallel.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('import:' || tenant_id::text, 0));

  -- One call at a time per batch, so the counters stay exact.
  select * into v_batch from app_public.import_batches b
    where b.id = batch_id and b.tenant_id = tenant_id
    for update;
  if not found then
    raise exception 'Import batch not found' using errcode = 'P0002';
  end if;
  if v_batch.status <> 'running' then
    raise exception 'Invalid batch_id: that import is already %', v_batch.status using errcode = '22023';
  end if;

  -- The per-row duplicate lookups need statistics on leads to use the right index; on a database
  -- whose leads were never analyzed (a first import), gather them now, unless someone else is.
  if not exists (select 1 from pg_catalog.pg_stats s where s.schemaname = 'app_public' and s.tablename = 'leads' and s.attname = 'phone') then
    begin
      lock table app_public.leads in share update exclusive mode nowait;
      analyze app_public.leads;
    exception when lock_not_available then
      null;
    end;
  end if;

  -- History (audit log, status history) records these changes as coming from an import.
  perform pg_catalog.set_config('app.change_source', 'import', true);
  -- A row already recorded (a retried chunk) is not processed or counted again.
  select coalesce(pg_catalog.array_agg(r.row_number), '{}') into v_done
  from app_public.import_batch_rows r
  where r.tenant_id = v_batch.tenant_id and r.batch_id = v_batch.id
    and r.row_number = any (array(select (e.value ->> 'row_number')::numeric::int from pg_catalog.jsonb_array_elements(rows) e));
  for v_item in select e.value from pg_catalog.jsonb_array_elements(rows) with ordinality e order by e.ordinality loop
    continue when (v_item ->> 'row_number')::numeric::int = any (v_done);
    v_row := app_private.import_lead_row(v_batch, v_item);
    case v_row.result
      when 'created' then v_created := v_created + 1;
      when 'merged' then v_merged := v_merged + 1;
      when 'skipped' then v_skipped := v_skipped + 1;
      else v_rejected := v_rejected + 1;
    end case;
  end loop;
  perform pg_catalog.set_config('app.change_source', coalesce(v_previous_source, ''), true);

  update app_public.import_batches b set
    row_count = b.row_count + v_created + v_merged + v_skipped + v_rejected,
    created_count = b.created_count + v_created,
    merged_count = b.merged_count + v_merged,
    skipped_count = b.skipped_count + v_skipped,
    rejected_count = b.rejected_count + v_rejected
  where b.id = v_batch.id and b.tenant_id = v_batch.tenant_id
  returning * into v_batch;
  return v_batch;
end;
$$;
comment on function app_private.import_lead_rows(uuid, uuid, jsonb) is 'Imports up to 5000 normalised rows into a running batch of the given tenant (imports into the same tenant take turns, transaction by transaction), each row in its own sub-transaction (a bad row is recorded as rejected, never stops the others), and returns the batch with its counters. Rows already recorded in the batch (a retried chunk) are ignored. Changes are recorded with change_source import. No permission check: for the command line and app_public.import_rows. Errors: 22023 malformed rows or a finished batch; P0002 unknown batch.';

create function app_private.finish_import(tenant_id uuid, batch_id uuid) returns app_public.import_batches
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_batch app_public.import_batches;
begin
  update app_public.import_batches b set status = 'completed', finished_at = pg_catalog.now()
    where b.id = batch_id and b.tenant_id = tenant_id and b.status = 'running'
    returning * into v_batch;
  if not found then
    select * into v_batch from app_public.import_batches b where b.id = batch_id and b.tenant_id = tenant_id;
    if not found then
      raise exception 'Import batch not found' using errcode = 'P0002';
    end if;
  end if;
  return v_batch;
end;
$$;
comment on function app_private.finish_import(uuid, uuid) is 'Marks a running import of the given tenant completed and returns it (a finished import is returned as it is). No permission check. Errors: P0002 unknown batch.';

create function app_private.fail_import(tenant_id uuid, batch_id uuid, reason text) returns app_public.import_batches
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_batch app_public.import_batches;
begin
  update app_public.import_batches b
    set status = 'failed', finished_at = pg_catalog.now(), failure_reason = coalesce(nullif(pg_catalog.btrim(reason), ''), 'Stopped early')
    where b.id = batch_id and b.tenant_id = tenant_id and b.status = 'running'
    returning * into v_batch;
  if not found then
    select * into v_batch from app_public.import_batches b where b.id = batch_id and b.tenant_id = tenant_id;
    if not found then
      raise exception 'Import batch not found' using errcode = 'P0002';
    end if;
  end if;
  return v_batch;
end;
$$;
comment on function app_private.fail_import(uuid, uuid, text) is 'Marks a running import failed with the reason (e.g. the file turned out to be malformed); the rows already imported stay. No permission check. Errors: P0002 unknown batch.';

--------------------------------------------------------------------------------
-- Public API: managers and up of the current tenant.
--------------------------------------------------------------------------------

create function app_public.start_import(source_name text default null, mode text default 'skip', default_country text default 'US')
  returns app_public.import_batches
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('manager', 'import leads');
begin
  return app_private.start_import(v_tenant_id, source_name, mode, default_country, app_public.current_user_id());
end;
$$;
comment on function app_public.start_import(text, text, text) is 'Starts a bulk import of leads into the current tenant and returns the batch; send the rows with import_rows, then call finish_import. mode: skip (default; a row matching a live lead by phone, or by email when it has no phone, is skipped) or merge (fills the lead''s empty fields and adds tags). default_country: two-letter code for phones without a country code (default US). The importLeads mutation does all three from a CSV. Managers and up. Errors: 42501 not allowed; 22023 bad mode or country.';

create function app_public.import_rows(batch_id uuid, rows jsonb) returns app_public.import_batches
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('manager', 'import leads');
begin
  return app_private.import_lead_rows(v_tenant_id, batch_id, rows);
end;
$$;
comment on function app_public.import_rows(uuid, jsonb) is 'Imports up to 5000 rows into a running import of the current tenant and returns the batch with its counters. Each row is {"row_number": 2, "raw": {…the file''s columns…}, "lead": {"first_name", "last_name", "phone" (E.164), "email", "city", "region", "postal_code", "country", "source", "tags": [], "status", "job_type", "urgency", "estimated_value", "event_date", … "attributes": {}}, "error": null or why the row can''t be imported}. Each row is recorded in import_batch_rows: created, merged, skipped or rejected with the reason; a bad row never stops the others, and a row_number already recorded is ignored (safe to retry). Managers and up. Errors: 42501 not allowed; 22023 malformed rows or finished import; P0002 unknown import.';

create function app_public.finish_import(batch_id uuid) returns app_public.import_batches
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('manager', 'import leads');
begin
  return app_private.finish_import(v_tenant_id, batch_id);
end;
$$;
comment on function app_public.finish_import(uuid) is 'Marks an import of the current tenant completed and returns it with its final counters. Managers and up. Errors: 42501 not allowed; P0002 unknown import.';

revoke all on function
  app_private.import_lead_fields(),
  app_private.start_import(uuid, text, text, text, uuid),
  app_private.import_lead_row(app_public.import_batches, jsonb),
  app_private.import_lead_rows(uuid, uuid, jsonb),
  app_private.finish_import(uuid, uuid),
  app_private.fail_import(uuid, uuid, text),
  app_public.start_import(text, text, text),
  app_public.import_rows(uuid, jsonb),
  app_public.finish_import(uuid)
from public;
grant execute on function
  app_public.start_import(text, text, text),
  app_public.import_rows(uuid, jsonb),
  app_public.finish_import(uuid)
to :DATABASE_VISITOR;

--! split: 060-maintenance.sql
--------------------------------------------------------------------------------
-- Nightly CRM maintenance: values that depend on the passing of time (a score's
-- engagement recency, a segment filtered on "created within N days") go stale between
-- changes, so once a night every tenant gets a rescore and a segment count refresh.
--------------------------------------------------------------------------------

drop function if exists app_private.enqueue_nightly_crm_refresh();

create function app_private.enqueue_nightly_crm_refresh() returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid;
  v_count integer := 0;
begin
  for v_tenant_id in select t.id from app_public.tenants t order by t.id loop
    -- Same job keys as the change-driven jobs, so a pending one is replaced, never doubled.
    perform app_private.add_job('lead__score_tenant', pg_catalog.json_build_object('tenant_id', v_tenant_id),
      job_key => 'lead_score_tenant:' || v_tenant_id::text);
    if exists (select 1 from app_public.segments s where s.tenant_id = v_tenant_id) then
      perform app_private.add_job('segment__refresh_counts', pg_catalog.json_build_object('tenant_id', v_tenant_id),
        job_key => 'segment_counts:' || v_tenant_id::text);
    end if;
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;
comment on function app_private.enqueue_nightly_crm_refresh() is 'Enqueues, for every tenant, a rescore of its leads (lead__score_tenant) and, when it has segments, a refresh of their lead counts (segment__refresh_counts), keyed so pending jobs are replaced rather than doubled. Run nightly by the maintenance__nightly_crm_refresh task (crontab). Returns the number of tenants.';
