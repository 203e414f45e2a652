--! Previous: sha1:15066ff53b4ff5b4dce1a358f00d6c399efe8142
--! Hash: sha1:402dc9835e7159fbc7c0f25afa5be0407bf1a7dc
--! Message: Issue 17: consent records: evidence of consent per number and channel, append-only, with disclosure, method, page, IP, user agent, time and a SHA-256 evidence hash; marketing and nurture texts need a current marketing consent, SB002, a nurture text step is skipped as no_consent, the claim cancels a text whose consent ended; an opt-out revokes, START restores what it ended; recordConsent and revokeConsent; imports attach consent; the timeline shows consent given and revoked

-- Issue 17, point 6: consent records. Who consented to what (marketing or transactional), on which
-- channel, how (a web form, an import, the API, a texted keyword), with the disclosure shown, the page,
-- the IP address, the user agent, the time and a hash of all of it. A marketing or nurture text goes
-- only to a number with a current marketing consent; an opt-out or a member's revocation ends it.

create table if not exists app_public.consent_records (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  lead_id uuid,
  channel text not null,
  phone app_public.e164_phone,
  email text,
  purpose text not null,
  method text not null,
  disclosure text,
  page_url text,
  ip inet,
  user_agent text,
  message_id uuid,
  given_at timestamptz not null,
  recorded_at timestamptz not null default clock_timestamp(),
  recorded_by_user_id uuid default app_public.current_user_id(),
  evidence_hash text not null,
  revoked_at timestamptz,
  revoked_by text,
  constraint consent_records_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint consent_records_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete set null (lead_id),
  constraint consent_records_channel_must_be_sms_or_email check (channel in ('sms', 'email')),
  constraint consent_records_sms_needs_a_phone_and_email_an_address check (
    (channel = 'sms' and phone is not null and email is null) or (channel = 'email' and email is not null and phone is null)),
  constraint consent_records_purpose_must_be_marketing_or_transactional check (purpose in ('marketing', 'transactional')),
  constraint consent_records_method_must_be_form_import_api_or_keyword check (method in ('form', 'import', 'api', 'keyword')),
  constraint consent_records_marketing_needs_the_disclosure_shown check (
    purpose <> 'marketing' or coalesce(pg_catalog.length(pg_catalog.btrim(disclosure)), 0) >= 20),
  constraint consent_records_disclosure_must_be_at_most_4000_characters check (pg_catalog.length(disclosure) <= 4000),
  constraint consent_records_form_needs_its_page_ip_and_user_agent check (
    method <> 'form' or (page_url is not null and ip is not null and user_agent is not null)),
  constraint consent_records_page_url_must_be_http_and_at_most_2048 check (
    page_url ~* '^https?://[^[:space:]]+\Z' and pg_catalog.length(page_url) <= 2048),
  constraint consent_records_user_agent_must_be_at_most_1000_characters check (pg_catalog.length(user_agent) <= 1000),
  constraint consent_records_keyword_needs_the_text_that_gave_it check (method <> 'keyword' or message_id is not null),
  constraint consent_records_email_must_be_at_most_320_characters check (pg_catalog.length(email) <= 320),
  constraint consent_records_revocation_needs_when_and_how check ((revoked_at is null) = (revoked_by is null)),
  constraint consent_records_revoked_by_must_be_known check (revoked_by in ('sms_keyword', 'provider', 'manual', 'api')),
  constraint consent_records_evidence_hash_must_be_sha256_hex check (evidence_hash ~ '^[0-9a-f]{64}\Z')
);
comment on table app_public.consent_records is $$@behavior -insert -update -delete
Evidence of consent, per number or address and channel (append-only: only a revocation is ever added to a record): who consented to what (marketing or transactional texts or emails), how (method), the disclosure they were shown, where (page URL, IP address, user agent), when, and a SHA-256 hash of all of it taken when recorded. A marketing or nurture text goes only to a number with a current marketing consent (not revoked): the TCPA requires prior express written consent for marketing texts. Record one with recordConsent; an opt-out (a texted STOP, the provider’s report) or revokeConsent ends it. Kept when the lead is deleted.$$;
comment on column app_public.consent_records.id is 'The record’s id.';
comment on column app_public.consent_records.tenant_id is 'The business the consent was given to.';
comment on column app_public.consent_records.lead_id is 'The lead it was recorded for (null once the lead is deleted: the evidence stays).';
comment on column app_public.consent_records.channel is 'sms or email.';
comment on column app_public.consent_records.phone is 'The number consented for (E.164), for sms.';
comment on column app_public.consent_records.email is 'The address consented for, for email.';
comment on column app_public.consent_records.purpose is 'marketing (promotional texts and nurture) or transactional (answers, reminders about an order or appointment).';
comment on column app_public.consent_records.method is 'How it was given: form (a web form: page_url, ip and user_agent required), import (a file of leads), api (an API client), keyword (the customer texted START after opting out: message_id).';
comment on column app_public.consent_records.disclosure is 'The exact words the person agreed to (at least 20 characters for marketing): who will text, about what, that consent is not a condition of purchase, how to stop.';
comment on column app_public.consent_records.page_url is 'The page the form was on (http or https).';
comment on column app_public.consent_records.ip is 'The IP address the form was sent from.';
comment on column app_public.consent_records.user_agent is 'The browser that sent the form.';
comment on column app_public.consent_records.message_id is 'The inbound text that gave it (method keyword).';
comment on column app_public.consent_records.given_at is 'When the person gave it (not in the future).';
comment on column app_public.consent_records.recorded_at is 'When it was recorded here.';
comment on column app_public.consent_records.recorded_by_user_id is 'The member who recorded it (null for the system and imports run by the worker).';
comment on column app_public.consent_records.evidence_hash is 'SHA-256 (hex) of the evidence as written (tenant, channel, number or address, purpose, method, disclosure, page, IP, user agent, message, time given): recompute it to show the record was not changed since.';
comment on column app_public.consent_records.revoked_at is 'When it ended (null while current).';
comment on column app_public.consent_records.revoked_by is 'How it ended: sms_keyword (the customer texted an opt-out), provider (the SMS provider reported one), manual or api (a member recorded the customer’s revocation).';

create index if not exists consent_records_current_by_phone on app_public.consent_records (tenant_id, phone, purpose)
  where channel = 'sms' and revoked_at is null;
create index if not exists consent_records_by_lead_given on app_public.consent_records (tenant_id, lead_id, given_at);
create index if not exists consent_records_by_lead_revoked on app_public.consent_records (tenant_id, lead_id, revoked_at);

alter table app_public.consent_records enable row level security;
alter table app_public.consent_records force row level security;
drop policy if exists owner_all on app_public.consent_records;
create policy owner_all on app_public.consent_records for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_current_tenant on app_public.consent_records;
create policy select_current_tenant on app_public.consent_records for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.consent_records to :DATABASE_VISITOR;

alter table app_public.nurture_step_runs drop constraint if exists nurture_step_runs_skip_reason_must_be_known;
alter table app_public.nurture_step_runs add constraint nurture_step_runs_skip_reason_must_be_known
  check (skip_reason in ('condition', 'no_phone', 'no_email', 'no_sending_number', 'no_postal_address', 'no_consent'));

--! Included messaging/tg_consent_records__evidence.sql
create or replace function app_private.tg_consent_records__evidence() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if TG_OP = 'UPDATE' then
    -- Evidence is never rewritten: a record takes its revocation, once, and loses its lead when the lead
    -- is deleted (the evidence stays).
    if pg_catalog.to_jsonb(NEW) - 'revoked_at' - 'revoked_by' - 'lead_id' is distinct from pg_catalog.to_jsonb(OLD) - 'revoked_at' - 'revoked_by' - 'lead_id'
       or (NEW.lead_id is distinct from OLD.lead_id and NEW.lead_id is not null)
       or (OLD.revoked_at is not null and (NEW.revoked_at, NEW.revoked_by) is distinct from (OLD.revoked_at, OLD.revoked_by)) then
      raise exception 'A consent record is evidence: nothing in it changes, it can only be revoked, once'
        using errcode = '55000';
    end if;
    return NEW;
  end if;
  if NEW.given_at > pg_catalog.clock_timestamp() + interval '5 minutes' then
    raise exception 'Consent cannot be given in the future (given at %)', NEW.given_at using errcode = '22023';
  end if;
  NEW.email := pg_catalog.lower(pg_catalog.btrim(NEW.email));
  NEW.evidence_hash := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.jsonb_build_object(
    'tenant_id', NEW.tenant_id, 'channel', NEW.channel, 'phone', NEW.phone, 'email', NEW.email,
    'purpose', NEW.purpose, 'method', NEW.method, 'disclosure', NEW.disclosure, 'page_url', NEW.page_url,
    'ip', pg_catalog.host(NEW.ip), 'user_agent', NEW.user_agent, 'message_id', NEW.message_id,
    'given_at', pg_catalog.to_char(NEW.given_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text, 'UTF8')), 'hex');
  return NEW;
end;
$$;

comment on function app_private.tg_consent_records__evidence() is $$Trigger (_100_evidence, before insert or update on consent_records): on insert, refuses a time given in the future (22023, five minutes of clock skew allowed), lower-cases the email address and writes evidence_hash, the SHA-256 of the record’s evidence as a JSON object (keys tenant_id, channel, phone, email, purpose, method, disclosure, page_url, ip (the address, without a mask), user_agent, message_id, given_at in UTC with microseconds, as jsonb writes it); on update, allows only the one revocation of a current record, and the loss of its lead when the lead is deleted (55000 otherwise).$$;
--! EndIncluded messaging/tg_consent_records__evidence.sql
--! Included messaging/has_sms_marketing_consent.sql
create or replace function app_private.has_sms_marketing_consent(tenant_id uuid, phone text) returns boolean
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select exists (select 1 from app_public.consent_records c
                  where c.tenant_id = has_sms_marketing_consent.tenant_id and c.phone = has_sms_marketing_consent.phone
                    and c.channel = 'sms' and c.purpose = 'marketing' and c.revoked_at is null);
$$;

comment on function app_private.has_sms_marketing_consent(uuid, text) is $$Whether this business holds a current (not revoked) marketing consent for texts to this number (app_public.consent_records). Marketing and nurture texts need one (the guard of messages, run_nurture_step).$$;
--! EndIncluded messaging/has_sms_marketing_consent.sql
--! Included messaging/revoke_sms_consents.sql
create or replace function app_private.revoke_sms_consents(tenant_id uuid, phone text, revoked_by text, purposes text[] default array['marketing', 'transactional'])
  returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  update app_public.consent_records c set revoked_at = pg_catalog.clock_timestamp(), revoked_by = revoke_sms_consents.revoked_by
   where c.tenant_id = revoke_sms_consents.tenant_id and c.phone = revoke_sms_consents.phone and c.channel = 'sms'
     and c.purpose = any (revoke_sms_consents.purposes) and c.revoked_at is null;
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;

comment on function app_private.revoke_sms_consents(uuid, text, text, text[]) is $$Ends every current consent for texts to this number in this business (of these purposes; both by default: an opt-out stops every text but the carriers’ required answers), recording when and how (revoked_by: sms_keyword, provider, manual, api). Returns how many records it ended. Used by record_opt_out and revokeConsent.$$;
--! EndIncluded messaging/revoke_sms_consents.sql
--! Included messaging/record_consent.sql
create or replace function app_public.record_consent(lead_id uuid, channel text, purpose text, disclosure text,
    given_at timestamptz default now(), method text default 'api', page_url text default null, ip inet default null,
    user_agent text default null) returns app_public.consent_records
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'record consent');
  v_lead app_public.leads;
  v_record app_public.consent_records;
begin
  if record_consent.method is null or record_consent.method not in ('api', 'form') then
    raise exception 'method must be api or form, got %: imports and texted keywords record their own consent',
      coalesce(pg_catalog.quote_literal(record_consent.method), 'nothing') using errcode = '22023';
  end if;
  if record_consent.channel is null or record_consent.channel not in ('sms', 'email') then
    raise exception 'channel must be sms or email, got %', coalesce(pg_catalog.quote_literal(record_consent.channel), 'nothing')
      using errcode = '22023';
  end if;
  if record_consent.given_at is null then
    raise exception 'given_at is required: when the person gave their consent' using errcode = '22023';
  end if;
  select l.* into v_lead from app_public.leads l
   where l.tenant_id = v_tenant_id and l.id = record_consent.lead_id and l.deleted_at is null;
  if not found then
    raise exception 'No lead % in this tenant', record_consent.lead_id using errcode = 'P0002';
  end if;
  if record_consent.channel = 'sms' and v_lead.phone is null then
    raise exception 'This lead has no phone number to consent for' using errcode = '22023';
  elsif record_consent.channel = 'email' and v_lead.email is null then
    raise exception 'This lead has no email address to consent for' using errcode = '22023';
  end if;
  insert into app_public.consent_records (tenant_id, lead_id, channel, phone, email, purpose, method, disclosure, page_url, ip,
    user_agent, given_at, evidence_hash)
  values (v_tenant_id, v_lead.id, record_consent.channel,
    case when record_consent.channel = 'sms' then v_lead.phone end,
    case when record_consent.channel = 'email' then v_lead.email::text end,
    record_consent.purpose, record_consent.method, nullif(pg_catalog.btrim(record_consent.disclosure), ''),
    nullif(pg_catalog.btrim(record_consent.page_url), ''), record_consent.ip,
    nullif(pg_catalog.btrim(record_consent.user_agent), ''), record_consent.given_at, pg_catalog.repeat('0', 64))
  returning * into v_record;
  return v_record;
end;
$$;

comment on function app_public.record_consent(uuid, text, text, text, timestamptz, text, text, inet, text) is $$Records a lead’s consent to texts (channel sms, for the lead’s phone) or emails (email, for the lead’s address), for marketing or transactional messages (agents and up). disclosure is the exact text the person agreed to (required for marketing, at least 20 characters); given_at when they agreed (default now, never in the future); method api (the default) or form, which also needs page_url, ip and user_agent. The record is evidence: it is never changed, only revoked (revokeConsent, or an opt-out), and its evidenceHash is the SHA-256 of what was recorded. A marketing or nurture text goes only to a number with a current marketing consent. Errors: 22023 (an unknown channel or method, no phone or email on the lead, a time in the future), 23514 (evidence missing or too long: the constraint names it), P0002 no such lead, 42501 not an agent of the tenant.$$;
grant execute on function app_public.record_consent(uuid, text, text, text, timestamptz, text, text, inet, text) to :DATABASE_VISITOR;
--! EndIncluded messaging/record_consent.sql
--! Included messaging/revoke_consent.sql
create or replace function app_public.revoke_consent(lead_id uuid, channel text, purpose text default 'marketing')
  returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'record a revocation of consent');
  v_lead app_public.leads;
  v_count integer;
begin
  if revoke_consent.channel is null or revoke_consent.channel not in ('sms', 'email') then
    raise exception 'channel must be sms or email, got %', coalesce(pg_catalog.quote_literal(revoke_consent.channel), 'nothing')
      using errcode = '22023';
  end if;
  if revoke_consent.purpose is null or revoke_consent.purpose not in ('marketing', 'transactional') then
    raise exception 'purpose must be marketing or transactional, got %', coalesce(pg_catalog.quote_literal(revoke_consent.purpose), 'nothing')
      using errcode = '22023';
  end if;
  select l.* into v_lead from app_public.leads l where l.tenant_id = v_tenant_id and l.id = revoke_consent.lead_id;
  if not found then
    raise exception 'No lead % in this tenant', revoke_consent.lead_id using errcode = 'P0002';
  end if;
  if revoke_consent.channel = 'sms' then
    v_count := app_private.revoke_sms_consents(v_tenant_id, v_lead.phone, 'manual', array[revoke_consent.purpose]);
    -- Nothing queued under the consent that ended may still go.
    if revoke_consent.purpose = 'marketing' and not app_private.has_sms_marketing_consent(v_tenant_id, v_lead.phone) then
      update app_public.messages m
         set status = 'canceled', failed_at = now(), error_message = 'Canceled: the recipient revoked their consent to marketing texts'
       where m.tenant_id = v_tenant_id and m.to_phone = v_lead.phone and m.direction = 'outbound' and m.status = 'queued'
         and m.purpose in ('marketing', 'nurture');
    end if;
  else
    update app_public.consent_records c set revoked_at = pg_catalog.clock_timestamp(), revoked_by = 'manual'
     where c.tenant_id = v_tenant_id and c.channel = 'email' and c.email = pg_catalog.lower(v_lead.email::text)
       and c.purpose = revoke_consent.purpose and c.revoked_at is null;
    get diagnostics v_count = row_count;
  end if;
  return v_count;
end;
$$;

comment on function app_public.revoke_consent(uuid, text, text) is $$Records that a lead revoked their consent (told a member by phone, in person, by letter: any reasonable means counts), for texts to the lead’s number (channel sms) or emails to its address (email), of one purpose (marketing by default) (agents and up). Every current record of that number or address and purpose ends (revokedBy manual) and, for marketing texts, queued marketing and nurture texts to the number are canceled. Returns how many records ended (0 when there was none). A texted STOP or the provider’s report ends consent without this. Errors: 22023 an unknown channel or purpose, P0002 no such lead, 42501 not an agent of the tenant.$$;
grant execute on function app_public.revoke_consent(uuid, text, text) to :DATABASE_VISITOR;
--! EndIncluded messaging/revoke_consent.sql

drop trigger if exists _100_evidence on app_public.consent_records;
create trigger _100_evidence before insert or update on app_public.consent_records
  for each row execute function app_private.tg_consent_records__evidence();
comment on column app_public.nurture_step_runs.skip_reason is 'Why it was skipped: condition (skip_if matched), no_phone, no_email, no_sending_number, no_postal_address (an email step of a business without a postal address, which CAN-SPAM requires), or no_consent (a text step to a number without a current marketing consent).';

--! Included messaging/tg_messages__guard_outbound.sql
create or replace function app_private.tg_messages__guard_outbound() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_contact_at timestamptz;
  v_sent bigint;
begin
  if NEW.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(NEW.to_phone, NEW.tenant_id) then
    raise exception 'Not sent: % is on the do-not-contact list of this business (it opted out or was blocked), so nothing may be texted to it', NEW.to_phone
      using errcode = 'SB001';
  end if;
  -- Marketing waits while the customer's last word on consent is an unclear opt-out.
  if NEW.purpose in ('marketing', 'nurture') and app_private.sms_marketing_held(NEW.tenant_id, NEW.to_phone) then
    raise exception 'Not sent: the last text from % may have asked us to stop (it was unclear); no marketing goes to it until they answer the clarifying text with STOP or YES', NEW.to_phone
      using errcode = 'SB001';
  end if;
  -- Marketing needs the recipient's prior express written consent (TCPA), recorded and not revoked.
  if NEW.purpose in ('marketing', 'nurture') and not app_private.has_sms_marketing_consent(NEW.tenant_id, NEW.to_phone) then
    raise exception 'Not sent: no current consent to marketing texts from % is recorded; record the consent the person gave (recordConsent: the disclosure they agreed to, when and how) before texting them marketing', NEW.to_phone
      using errcode = 'SB002';
  end if;
  -- A notification is for the business's own people: the phone of a member's profile, never a lead.
  -- A member types their profile phone themselves: a number that is a live lead's, or a customer's in a
  -- conversation, is a customer's whatever a profile says.
  if NEW.purpose = 'notification'
     and (NEW.lead_id is not null
          or not exists (select 1 from app_public.user_profiles p
                          where p.tenant_id = NEW.tenant_id and p.phone_number = NEW.to_phone)
          or exists (select 1 from app_public.leads l
                      where l.tenant_id = NEW.tenant_id and l.phone = NEW.to_phone and l.deleted_at is null)
          or exists (select 1 from app_public.conversations c
                      where c.tenant_id = NEW.tenant_id and c.customer_phone = NEW.to_phone and c.status = 'active')) then
    raise exception 'Not sent: a notification text goes only to a member of this business (the phone of their profile); a text to a lead or customer is marketing, held to legal sending hours and caps'
      using errcode = '22023';
  end if;
  -- A reply belongs to a conversation the customer started, with that customer.
  if NEW.purpose in ('conversation', 'auto_response') then
    v_contact_at := app_private.sms_customer_contact_at(NEW.tenant_id, NEW.conversation_id, NEW.to_phone);
    if v_contact_at is null then
      raise exception 'Not sent: a % text answers a conversation the customer started, to that customer; this one has none (a text that starts a conversation is marketing)',
        pg_catalog.replace(NEW.purpose, '_', ' ') using errcode = '22023';
    end if;
    if NEW.scheduled_for <= v_contact_at + app_private.sms_reply_window() then
      return NEW;
    end if;
    -- Past the reply window it is no longer an answer: held to hours and caps below, and counted
    -- toward the cap like marketing.
    NEW.held_as_marketing := true;
  elsif NEW.purpose not in ('marketing', 'nurture') then
    return NEW;
  end if;
  -- One recipient at a time, so that concurrent queuing cannot pass a daily cap together.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('sms-cap:' || NEW.tenant_id || ':' || NEW.to_phone, 0));
  NEW.scheduled_for := app_private.sms_marketing_send_time(NEW.tenant_id, NEW.lead_id, NEW.to_phone, NEW.scheduled_for);
  -- The first marketing text to a number, and every sms_identify_every-th one, says who sends it and how
  -- to stop (counted under the same lock, so concurrent writers cannot both skip it).
  if NEW.purpose in ('marketing', 'nurture') then
    select pg_catalog.count(*) into v_sent from app_public.messages m
     where m.tenant_id = NEW.tenant_id and m.to_phone = NEW.to_phone and m.direction = 'outbound'
       and m.purpose in ('marketing', 'nurture') and m.status <> 'canceled';
    if v_sent % coalesce((select s.sms_identify_every from app_public.business_settings s where s.tenant_id = NEW.tenant_id), 10) = 0 then
      NEW.body := app_private.sms_identified_body(NEW.tenant_id, NEW.body);
    end if;
  end if;
  return NEW;
end;
$$;

comment on function app_private.tg_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert of outbound messages). THE RULE of is_on_dnc_list, enforced where every text is written: a number on the do-not-contact list gets nothing (SQLSTATE SB001), except the one opt-out confirmation and HELP replies, which the carriers require; marketing and nurture texts also get SB001 while the number is held after an unclear opt-out (app_private.sms_marketing_held), and SB002 without a current marketing consent for the number (app_public.consent_records). No bypass of sending hours (22023 otherwise): a notification goes only to the profile phone of a member of the business, never to a number that is a live lead’s or a customer’s in an open conversation; a conversation reply or missed-call auto-response only to the customer of a conversation they started (app_private.sms_customer_contact_at). Marketing and nurture texts, and replies sent more than app_private.sms_reply_window() (24 hours) after the customer’s last call or text, are moved (scheduled_for) to sms_marketing_send_time: legal sending hours of the recipient and the per-state daily cap. Replies within that window go at once. The first marketing or nurture text to a number, and every business_settings.sms_identify_every-th one (default 10), names the business and says how to stop (app_private.sms_identified_body). Concurrent queuing to one recipient is serialized by an advisory lock.$$;
--! EndIncluded messaging/tg_messages__guard_outbound.sql
--! Included nurture/run_nurture_step.sql
create or replace function app_private.run_nurture_step(enrollment_id uuid, step_number integer) returns text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_enrollment app_public.lead_sequence_enrollments;
  v_sequence app_public.nurture_sequences;
  v_version app_public.nurture_sequence_versions;
  v_lead app_public.leads;
  v_step jsonb;
  v_channel text;
  v_now timestamptz;
  v_at timestamptz;
  v_from text;
  v_skip text;
  v_message app_public.messages;
  v_email app_public.email_messages;
  v_key text;
  v_opted_out text;
begin
  select e.* into v_enrollment from app_public.lead_sequence_enrollments e where e.id = run_nurture_step.enrollment_id for update;
  if not found then
    return 'missing';
  end if;
  if v_enrollment.status <> 'active' then
    return 'not_active';
  end if;
  if v_enrollment.next_step_number <> run_nurture_step.step_number then
    return 'stale';
  end if;
  select s.* into v_sequence from app_public.nurture_sequences s where s.tenant_id = v_enrollment.tenant_id and s.id = v_enrollment.sequence_id;
  if v_sequence.status = 'paused' then
    return 'paused';
  end if;
  v_now := app_hidden.clock_now(v_enrollment.tenant_id);
  if v_enrollment.next_step_at > v_now + interval '1 second' then
    perform app_private.schedule_nurture_step(v_enrollment.id);
    return 'not_due';
  end if;
  select l.* into v_lead from app_public.leads l where l.tenant_id = v_enrollment.tenant_id and l.id = v_enrollment.lead_id;
  if v_lead.deleted_at is not null then
    perform app_private.stop_enrollment(v_enrollment.id, 'lead_deleted');
    return 'stopped';
  end if;
  if exists (select 1 from app_public.lead_statuses st where st.status = v_lead.status and st.is_final) then
    perform app_private.stop_enrollment(v_enrollment.id, case when v_lead.status = 'dnc' then 'dnc' else 'final_status' end);
    return 'stopped';
  end if;
  select v.* into v_version from app_public.nurture_sequence_versions v
  where v.tenant_id = v_enrollment.tenant_id and v.sequence_id = v_enrollment.sequence_id and v.version = v_enrollment.version;
  v_step := v_version.steps -> (run_nurture_step.step_number - 1);
  v_channel := v_step ->> 'channel';

  -- Outside the sending window now (a resumed sequence, a late worker): wait for the next opening.
  v_at := app_hidden.next_in_sending_window(v_version.sending_window, coalesce(v_lead.timezone, 'UTC'), v_now);
  if v_at > v_now + interval '1 second' then
    update app_public.lead_sequence_enrollments e set next_step_at = v_at where e.id = v_enrollment.id;
    perform app_private.schedule_nurture_step(v_enrollment.id);
    return 'moved';
  end if;

  if v_step ? 'skip_if' and app_hidden.lead_matches_filter(v_enrollment.tenant_id, v_lead.id, v_step -> 'skip_if') then
    v_skip := 'condition';
  elsif v_channel = 'sms' and v_lead.phone is null then
    v_skip := 'no_phone';
  elsif v_channel = 'sms' and not app_private.has_sms_marketing_consent(v_enrollment.tenant_id, v_lead.phone) then
    v_skip := 'no_consent';  -- TCPA: no marketing text without prior express written consent
  elsif v_channel = 'email' and v_lead.email is null then
    v_skip := 'no_email';
  elsif v_channel = 'email' and app_private.tenant_postal_address(v_enrollment.tenant_id) is null then
    v_skip := 'no_postal_address';  -- CAN-SPAM: no commercial email without the sender's postal address
  end if;
  -- An opt-out on either channel ends nurture on both (the stop triggers normally got here first).
  v_opted_out := app_private.nurture_lead_opted_out(v_lead.tenant_id, v_lead.id);
  if v_opted_out is not null then
    perform app_private.stop_enrollment(v_enrollment.id, v_opted_out);
    return 'stopped';
  end if;
  if v_skip is null and v_channel = 'sms' then
    select p.phone_number into v_from from app_public.phone_numbers p
    where p.tenant_id = v_enrollment.tenant_id and p.status = 'active' and 'sms' = any (p.capabilities)
    order by p.date_provisioned, p.id limit 1;
    if v_from is null then
      v_skip := 'no_sending_number';
    end if;
  end if;

  v_key := 'nurture:' || v_enrollment.id || ':' || run_nurture_step.step_number;
  if v_skip is null and v_channel = 'sms' then
    v_message := app_private.queue_message(v_enrollment.tenant_id, v_lead.phone, v_from,
      pg_catalog.left(app_private.render_nurture_template(v_step ->> 'template', v_enrollment.tenant_id, v_lead.id), 1600),
      'nurture', 'system', null, v_lead.id, v_key, v_now);
    update app_public.messages m set nurture_enrollment_id = v_enrollment.id, nurture_step = run_nurture_step.step_number
    where m.id = v_message.id;
  elsif v_skip is null then
    v_email := app_private.queue_email(v_enrollment.tenant_id, v_lead.email::text,
      pg_catalog.left(pg_catalog.btrim(app_private.render_nurture_template(v_step ->> 'subject', v_enrollment.tenant_id, v_lead.id)), 998),
      app_private.render_nurture_template(v_step ->> 'template', v_enrollment.tenant_id, v_lead.id),
      'nurture', v_lead.id, null, v_key, null, v_now);
    update app_public.email_messages em set nurture_enrollment_id = v_enrollment.id, nurture_step = run_nurture_step.step_number
    where em.id = v_email.id;
  end if;
  insert into app_public.nurture_step_runs (tenant_id, enrollment_id, sequence_id, version, step_number, channel, outcome,
    skip_reason, message_id, email_message_id, ran_at)
  values (v_enrollment.tenant_id, v_enrollment.id, v_enrollment.sequence_id, v_enrollment.version, run_nurture_step.step_number,
    v_channel, case when v_skip is null then 'queued' else 'skipped' end, v_skip, v_message.id, v_email.id, v_now);
  update app_public.lead_sequence_enrollments e set current_step = run_nurture_step.step_number where e.id = v_enrollment.id;
  perform app_private.plan_next_nurture_step(v_enrollment.id,
    greatest(v_now, coalesce(v_message.scheduled_for, v_email.scheduled_for, v_now)));
  return case when v_skip is null then 'queued' else 'skipped' end;
end;
$$;

comment on function app_private.run_nurture_step(uuid, integer) is $$Runs one step of one enrollment, once (run by the nurture__run_step job; the enrollment row is locked, and the step must be the one due): renders the template, queues the text or email in its outbox with the key nurture:<enrollment>:<step> (the outbox rules apply: do-not-contact, suppression, legal hours, daily caps), records the run, and plans the next step. Returns queued, skipped (skip_if matched, or no phone, email or texting number, a text step to a number without a current marketing consent, or an email step of a business without a postal address), moved (outside the sending window: waits for it), stopped (the lead was deleted, reached a final status, opted out or unsubscribed), not_due, paused, stale (another run got there first), not_active or missing.$$;
--! EndIncluded nurture/run_nurture_step.sql
--! Included messaging/record_opt_out.sql
create or replace function app_private.record_opt_out(tenant_id uuid, customer_phone text, business_phone text, keyword text,
    message_id uuid, source text default 'sms_keyword') returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_new boolean;
  v_settings app_public.business_settings;
begin
  if record_opt_out.source is null or record_opt_out.source not in ('sms_keyword', 'provider') then
    raise exception 'An opt-out comes from the customer''s text (sms_keyword) or from the provider (provider), got %',
      coalesce(pg_catalog.quote_literal(record_opt_out.source), 'nothing') using errcode = '22023';
  end if;
  insert into app_public.dnc_list (tenant_id, phone, reason, source)
  values (record_opt_out.tenant_id, record_opt_out.customer_phone,
    case record_opt_out.source
      when 'provider' then pg_catalog.format('The SMS provider reports that %s opted out (%s)', record_opt_out.customer_phone,
                                               coalesce(record_opt_out.keyword, 'unsubscribed'))
      else pg_catalog.format('Texted %s to %s', coalesce(record_opt_out.keyword, 'an opt-out word'), record_opt_out.business_phone)
    end,
    case record_opt_out.source when 'provider' then 'provider' else 'sms_opt_out' end)
  on conflict on constraint dnc_list_phone_must_be_unique_per_tenant do nothing;
  v_new := found;
  insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
  values (record_opt_out.tenant_id, record_opt_out.customer_phone, 'opt_out', record_opt_out.source, record_opt_out.keyword,
    record_opt_out.message_id);
  -- The opt-out ends every consent to texts from this business (a new one needs START, or a new consent).
  perform app_private.revoke_sms_consents(record_opt_out.tenant_id, record_opt_out.customer_phone, record_opt_out.source);
  -- Nothing still waiting may go out: queued texts are canceled (a text a worker is handing to the provider
  -- at this instant cannot be called back; claim_outbound_message checks the list again just before sending).
  -- The confirmation of an earlier opt-out and HELP answers still go (a second STOP right after the
  -- first canceled the confirmation the first one queued).
  update app_public.messages m
  set status = 'canceled', failed_at = now(), error_message = 'Canceled: the recipient opted out'
  where m.tenant_id = record_opt_out.tenant_id and m.to_phone = record_opt_out.customer_phone
    and m.direction = 'outbound' and m.status = 'queued' and m.purpose not in ('opt_out_confirmation', 'help');
  update app_public.conversations c
  set status = 'opted_out', outcome = coalesce(c.outcome, 'opted_out'), ai_active = false
  where c.tenant_id = record_opt_out.tenant_id and c.customer_phone = record_opt_out.customer_phone and c.status = 'active';
  -- One confirmation, ours, for an opt-out we read in a text. The provider confirms its own (Twilio's
  -- Advanced Opt-Out answers the keyword; after a 21610 the carrier blocks every text anyway).
  if v_new and record_opt_out.source = 'sms_keyword' then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = record_opt_out.tenant_id;
    perform app_private.queue_message(record_opt_out.tenant_id, record_opt_out.customer_phone, record_opt_out.business_phone,
      app_hidden.fill_sms_template(coalesce(v_settings.opt_out_confirmation_message,
        '[BUSINESS]: you are unsubscribed and will get no more texts from us. Reply START to subscribe again.'), record_opt_out.tenant_id),
      'opt_out_confirmation', 'system', null, null, 'opt_out_confirmation:' || record_opt_out.message_id);
  end if;
  return v_new;
end;
$$;

comment on function app_private.record_opt_out(uuid, text, text, text, uuid, text) is $$Records that a number opted out of this tenant's texts. source sms_keyword: we read an opt-out in the customer's text (keyword is what they wrote, message_id their message); source provider: the SMS provider says so (Twilio’s OptOutType STOP on an incoming text, or error 21610 on a send; keyword names which, message_id is that message). The number joins dnc_list (source sms_opt_out or provider; an existing entry stays as it is), a consent event is recorded either way, every current consent to texts from the business ends (consent_records, revoked_by the source), every queued text to it is canceled (but the confirmation of an earlier opt-out and HELP answers), its active conversations end (opted_out), and nurture enrollments stop (the dnc_list trigger). Only a new opt-out read in a text gets our one confirmation; the provider confirms its own. Returns whether the number joined the list. Errors: 22023 an unknown source.$$;
--! EndIncluded messaging/record_opt_out.sql
--! Included messaging/record_opt_in.sql
create or replace function app_private.record_opt_in(tenant_id uuid, customer_phone text, business_phone text, keyword text,
    message_id uuid, source text default 'sms_keyword') returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_settings app_public.business_settings;
begin
  if record_opt_in.source is null or record_opt_in.source not in ('sms_keyword', 'provider') then
    raise exception 'An opt-in comes from the customer''s text (sms_keyword) or from the provider (provider), got %',
      coalesce(pg_catalog.quote_literal(record_opt_in.source), 'nothing') using errcode = '22023';
  end if;
  -- Only what the customer's own words put there: an opt-out they texted, or one the provider reported.
  -- A block a person of the business set (manual, api, import, lead_status) stays.
  -- Nor while a live lead with that number has the status dnc (a person set it).
  delete from app_public.dnc_list d
  where d.tenant_id = record_opt_in.tenant_id and d.phone = record_opt_in.customer_phone and d.source in ('sms_opt_out', 'provider')
    and not exists (select 1 from app_public.leads l
                     where l.tenant_id = record_opt_in.tenant_id and l.phone = record_opt_in.customer_phone
                       and l.status = 'dnc' and l.deleted_at is null);
  if not found then
    return false;
  end if;
  insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
  values (record_opt_in.tenant_id, record_opt_in.customer_phone, 'opt_in', record_opt_in.source, record_opt_in.keyword,
    record_opt_in.message_id);
  -- Subscribing again brings back what the opt-out ended, no more: for each purpose whose consent the
  -- opt-out revoked, a new record given by this text, pointing at the one it restores.
  insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, message_id, given_at,
    recorded_by_user_id, evidence_hash)
  select distinct on (c.purpose) c.tenant_id, c.lead_id, 'sms', c.phone, c.purpose, 'keyword',
    pg_catalog.left(pg_catalog.format('Texted %s to %s to subscribe again to the texts consented to in consent record %s: %s',
      coalesce(record_opt_in.keyword, 'START'), record_opt_in.business_phone, c.id, coalesce(c.disclosure, c.purpose || ' texts')), 4000),
    record_opt_in.message_id, pg_catalog.clock_timestamp(), null, pg_catalog.repeat('0', 64)
    from app_public.consent_records c
   where c.tenant_id = record_opt_in.tenant_id and c.phone = record_opt_in.customer_phone and c.channel = 'sms'
     and c.revoked_by in ('sms_keyword', 'provider') and record_opt_in.message_id is not null
     and not exists (select 1 from app_public.consent_records k
                      where k.tenant_id = c.tenant_id and k.phone = c.phone and k.channel = 'sms' and k.purpose = c.purpose
                        and k.revoked_at is null)
   order by c.purpose, c.revoked_at desc;
  if record_opt_in.source = 'sms_keyword' then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = record_opt_in.tenant_id;
    perform app_private.queue_message(record_opt_in.tenant_id, record_opt_in.customer_phone, record_opt_in.business_phone,
      app_hidden.fill_sms_template(coalesce(v_settings.opt_in_confirmation_message,
        '[BUSINESS]: you are subscribed again. Reply HELP for help, STOP to opt out.'), record_opt_in.tenant_id),
      'opt_in_confirmation', 'system', null, null, 'opt_in_confirmation:' || record_opt_in.message_id);
  end if;
  return true;
end;
$$;

comment on function app_private.record_opt_in(uuid, text, text, text, uuid, text) is $$Records that a number that opted out by text (or whose opt-out the provider reported) opted in again: START, UNSTOP or YES read in its text (source sms_keyword), or Twilio's OptOutType START (source provider). Removes only dnc_list entries of source sms_opt_out or provider (a block a person set stays, and so does the entry while a live lead with the number has the status dnc), records the consent event, restores the consents to texts that the opt-out ended (a new consent record per purpose, method keyword, given by this text), and queues our confirmation when we read the keyword (the provider confirms its own). Returns false, and changes nothing, when the number had no such entry. Errors: 22023 an unknown source.$$;
--! EndIncluded messaging/record_opt_in.sql
--! Included messaging/claim_outbound_message.sql
create or replace function app_private.claim_outbound_message(message_id uuid) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message app_public.messages;
  v_window app_public.sms_window;
begin
  select m.* into v_message from app_public.messages m
  where m.id = claim_outbound_message.message_id and m.direction = 'outbound' for update;
  if not found or v_message.status <> 'queued' then
    return null;
  end if;
  if v_message.scheduled_for > app_hidden.clock_now(v_message.tenant_id) + interval '1 second' then
    perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
    return null;
  end if;
  -- A nurture text goes only while its lead may be nurtured: not after its enrollment stopped, not after
  -- an opt-out on either channel (a row a dead worker left in sending may come back here after that).
  if v_message.nurture_enrollment_id is not null
     and (exists (select 1 from app_public.lead_sequence_enrollments e where e.id = v_message.nurture_enrollment_id and e.status = 'stopped')
          or app_private.nurture_lead_opted_out(v_message.tenant_id, v_message.lead_id) is not null) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: nurture stopped for this lead (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Consent is checked again at the last moment: the customer may have opted out since queuing.
  if v_message.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(v_message.to_phone, v_message.tenant_id) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the number is on the do-not-contact list (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Marketing held since an unclear opt-out of the customer does not go.
  if v_message.purpose in ('marketing', 'nurture') and app_private.sms_marketing_held(v_message.tenant_id, v_message.to_phone) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the recipient''s last text may have asked us to stop (unclear; checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Marketing goes only under a current consent: it may have been revoked since queuing (a member's
  -- revokeConsent racing the text being queued).
  if v_message.purpose in ('marketing', 'nurture') and not app_private.has_sms_marketing_consent(v_message.tenant_id, v_message.to_phone) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: no current consent to marketing texts (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Held to the recipient's hours: marketing, nurture, and a reply the customer's last call or text no
  -- longer covers (more than app_private.sms_reply_window() ago, or no longer their conversation).
  if v_message.purpose in ('marketing', 'nurture')
     or (v_message.purpose in ('conversation', 'auto_response')
         and coalesce(app_private.sms_customer_contact_at(v_message.tenant_id, v_message.conversation_id, v_message.to_phone)
                        + app_private.sms_reply_window() < app_hidden.clock_now(v_message.tenant_id), true)) then
    v_window := app_hidden.recipient_send_window(v_message.tenant_id, v_message.lead_id, v_message.to_phone, app_hidden.clock_now(v_message.tenant_id));
    if not v_window.allowed then
      update app_public.messages m set scheduled_for = coalesce(v_window.next_allowed_at, app_hidden.clock_now(v_message.tenant_id) + interval '1 hour') where m.id = v_message.id
      returning m.* into v_message;
      perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
      return null;
    end if;
  end if;
  update app_public.messages m
  set status = 'sending', sending_at = now(), attempts = m.attempts + 1
  where m.id = v_message.id
  returning m.* into v_message;
  return v_message;
end;
$$;

comment on function app_private.claim_outbound_message(uuid) is $$Step 1 of sending (sms__send), committed before the provider is called: a queued message due by the clock of its tenant becomes sending and is returned. Nothing (null) when it is not queued any more, not due yet (its job is moved), its number has joined the do-not-contact list since, or (marketing and nurture) is held after an unclear opt-out or has no current marketing consent any more, or it is a nurture text whose enrollment stopped or whose lead opted out on either channel (canceled), or a marketing or nurture text, or a reply past the reply window of its customer (app_private.sms_reply_window), is outside the sending hours by now (moved). A message left in sending by a crash is not sent again blindly: sweep_outbox hands it to reconciliation, which asks the provider first.$$;
--! EndIncluded messaging/claim_outbound_message.sql
--! Included crm/lead_timeline.sql
create or replace function app_public.lead_timeline(lead_id uuid) returns setof app_public.lead_timeline_event
  language sql stable
  -- SECURITY INVOKER: row-level security decides what the caller sees.
  -- No SET options (every name below is schema-qualified), so that PostgreSQL inlines it into the
  -- query of the API instead of running it apart and storing all its rows first.
as $$
  -- One branch per source; a new source (messages, calls, routing decisions) is one more UNION ALL
  -- branch with the same columns. source_order, seq and then uid (the id of a text, an email or an
  -- enrollment, whose seq can repeat) only break ties between equal times, so the order is total
  -- and the pages of the API (an offset under its cursors) neither repeat nor skip an event.
  -- The lead and its tenant are named once, on the union as a whole, not inside each branch: so
  -- PostgreSQL gives each source the conditions tenant_id = … and lead_id = … as constants, and the
  -- index of each source led by (tenant_id, lead_id, time) returns that lead's rows in time order.
  -- The sources are then merged in time order (Merge Append) and a page stops after its rows: the
  -- first 50 events of a lead with 40,000 read about 50 rows of each source, not 40,000. This holds
  -- only while each branch reads one table with no WHERE of its own: PostgreSQL keeps any other
  -- branch apart, planned without the order. So what a branch leaves out is said by its column
  -- shown, tested on the union with the lead, and the previous score is a subquery, not a window.
  -- Naming the tenant makes the index apply whoever the caller is: row-level security adds the same
  -- condition for a request, but the owner role of the worker has none.
  select ev.occurred_at, ev.event_type,
    -- A score change is told from its details here: PostgreSQL would copy the subquery of the
    -- previous score into every expression of its branch that used it (four lookups per score).
    case when ev.event_type = 'score_changed' then
      case
        when ev.details ->> 'previous_score' is null then 'Score set to ' || (ev.details ->> 'score')
        when ev.details -> 'previous_score' = ev.details -> 'score' then 'Score factors updated (score stays ' || (ev.details ->> 'score') || ')'
        else 'Score changed from ' || (ev.details ->> 'previous_score') || ' to ' || (ev.details ->> 'score')
      end
    else ev.summary end,
    ev.details, ev.actor_user_id
  from (
    -- Audit log: creation, field changes, deletion and restoration. Status, score and owner
    -- changes have their own, richer branches below.
    select a.tenant_id, a.lead_id,
      a.field_name not in ('status', 'lead_score', 'lead_score_factors', 'owner_user_id') as shown,
      a.changed_at as occurred_at, 1 as source_order, a.id as seq, null::uuid as uid,
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

    union all

    select s.tenant_id, s.lead_id, true, s.changed_at, 2, s.id, null::uuid,
      'status_changed',
      case when s.from_status is null then 'Status set to ' || s.to_status
           else 'Status changed from ' || s.from_status || ' to ' || s.to_status end
      || case when s.trigger_type <> 'manual' then ' (' || s.trigger_type || ')' else '' end,
      pg_catalog.jsonb_build_object('from_status', s.from_status, 'to_status', s.to_status, 'trigger_type', s.trigger_type),
      s.changed_by_user_id
    from app_public.lead_status_history s

    union all

    select sc.tenant_id, sc.lead_id, true, sc.calculated_at, 3, sc.id, null::uuid,
      'score_changed',
      null::text,  -- told from the details, above
      pg_catalog.jsonb_build_object('score', sc.score, 'previous_score', sc.previous_score, 'factors', sc.factors),
      null::uuid
    from (
      -- The score before: the lead's previous calculation in (calculated_at, id) order, found
      -- through the same index for the rows of the page only.
      select h.*,
        (select p.score from app_public.lead_score_history p
         where p.tenant_id = h.tenant_id and p.lead_id = h.lead_id
           and (p.calculated_at, p.id) < (h.calculated_at, h.id)
         order by p.calculated_at desc, p.id desc limit 1) as previous_score
      from app_public.lead_score_history h
    ) sc

    union all

    select g.tenant_id, g.lead_id, true, g.assigned_at, 4, g.id, null::uuid,
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

    union all

    -- Texts to and from the lead.
    select m.tenant_id, m.lead_id, true, coalesce(m.sent_at, m.created_at), 5, 0::bigint, m.id,
      case when m.direction = 'inbound' then 'sms_received' else 'sms_sent' end,
      case when m.direction = 'inbound' then 'Text received: '
           else 'Text ' || case m.status when 'queued' then 'queued' when 'sending' then 'sending' when 'canceled' then 'canceled'
                                         when 'failed' then 'failed' when 'undelivered' then 'undelivered' else 'sent' end
                || case when m.purpose in ('marketing', 'nurture', 'notification', 'auto_response') then ' (' || pg_catalog.replace(m.purpose, '_', ' ') || ')' else '' end
                || ': ' end
      || pg_catalog.left(m.body, 80) || case when pg_catalog.length(m.body) > 80 then '…' else '' end,
      pg_catalog.jsonb_build_object('message_id', m.id, 'direction', m.direction, 'status', m.status, 'purpose', m.purpose,
        'sender', m.sender, 'nurture_enrollment_id', m.nurture_enrollment_id, 'nurture_step', m.nurture_step),
      null::uuid
    from app_public.messages m

    union all

    -- Emails to the lead (not those to a user about the lead).
    select em.tenant_id, em.lead_id, em.user_id is null, coalesce(em.sent_at, em.created_at), 6, 0::bigint, em.id,
      'email_sent',
      'Email ' || case em.status when 'sent' then 'sent' else em.status end
      || case when em.purpose <> 'transactional' then ' (' || em.purpose || ')' else '' end || ': ' || em.subject,
      pg_catalog.jsonb_build_object('email_message_id', em.id, 'status', em.status, 'purpose', em.purpose,
        'nurture_enrollment_id', em.nurture_enrollment_id, 'nurture_step', em.nurture_step),
      null::uuid
    from app_public.email_messages em

    union all

    -- Consent given, and consent ended (by an opt-out or a member), from the evidence of consent_records.
    select c.tenant_id, c.lead_id, true, c.given_at, 8, 0::bigint, c.id,
      'consent_given',
      'Consent to ' || c.purpose || ' ' || case c.channel when 'sms' then 'texts' else 'emails' end || ' given ('
      || case c.method when 'form' then 'web form' when 'keyword' then 'texted keyword' else c.method end || ')',
      pg_catalog.jsonb_build_object('consent_record_id', c.id, 'channel', c.channel, 'purpose', c.purpose, 'method', c.method,
        'disclosure', c.disclosure, 'page_url', c.page_url, 'evidence_hash', c.evidence_hash),
      c.recorded_by_user_id
    from app_public.consent_records c

    union all

    select r.tenant_id, r.lead_id, r.revoked_at is not null, r.revoked_at, 9, 0::bigint, r.id,
      'consent_revoked',
      'Consent to ' || r.purpose || ' ' || case r.channel when 'sms' then 'texts' else 'emails' end || ' revoked ('
      || case r.revoked_by when 'sms_keyword' then 'opted out by text' when 'provider' then 'opt-out reported by the provider'
                           else 'recorded by a member' end || ')',
      pg_catalog.jsonb_build_object('consent_record_id', r.id, 'channel', r.channel, 'purpose', r.purpose, 'revoked_by', r.revoked_by),
      null::uuid
    from app_public.consent_records r

    union all

    -- Nurture: enrolled, each step, completed or stopped (times on the clock of the tenant).
    select e.tenant_id, e.lead_id, true, x.occurred_at, 7, x.seq, e.id, x.event_type, x.summary, x.details, x.actor_user_id
    from app_public.lead_sequence_enrollments e
    join app_public.nurture_sequences s on s.tenant_id = e.tenant_id and s.id = e.sequence_id
    cross join lateral (
      select e.enrolled_at as occurred_at, 0::bigint as seq, 'nurture_enrolled' as event_type,
        'Enrolled in nurture sequence "' || s.name || '"' || case when e.enrolled_via <> 'manual' then ' (' || pg_catalog.replace(e.enrolled_via, '_', ' ') || ')' else '' end as summary,
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id, 'version', e.version, 'enrolled_via', e.enrolled_via) as details,
        e.enrolled_by_user_id as actor_user_id
      union all
      select e.completed_at, 1000000::bigint, 'nurture_completed', 'Completed nurture sequence "' || s.name || '"',
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id), null::uuid
      where e.status = 'completed'
      union all
      select e.stopped_at, 1000000::bigint, 'nurture_stopped',
        'Nurture sequence "' || s.name || '" stopped: ' || pg_catalog.replace(e.stop_reason, '_', ' '),
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id, 'stop_reason', e.stop_reason, 'after_step', e.current_step), null::uuid
      where e.status = 'stopped'
      union all
      select r.ran_at, r.step_number::bigint, 'nurture_step',
        'Nurture "' || s.name || '" step ' || r.step_number || ' (' || r.channel || ') '
        || case when r.outcome = 'skipped' then 'skipped: ' || pg_catalog.replace(r.skip_reason, '_', ' ') else 'queued' end,
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'step_number', r.step_number, 'channel', r.channel, 'outcome', r.outcome,
          'skip_reason', r.skip_reason, 'message_id', r.message_id, 'email_message_id', r.email_message_id), null::uuid
      from app_public.nurture_step_runs r
      where r.tenant_id = e.tenant_id and r.enrollment_id = e.id
    ) x
  ) ev
  where ev.tenant_id = (select l.tenant_id from app_public.leads l where l.id = lead_timeline.lead_id)
    and ev.lead_id = lead_timeline.lead_id
    and ev.shown
  order by ev.occurred_at, ev.source_order, ev.seq, ev.uid;
$$;

comment on function app_public.lead_timeline(uuid) is $$Everything that happened to a lead, oldest first: creation, field changes, status, score, owner changes, deletion and restoration, texts sent and received, emails sent, consent given and revoked (consent_given, consent_revoked), and nurture enrollments with each step, completion or stop. Row-level security applies: you see the timeline of leads of your current tenant.$$;

grant execute on function app_public.lead_timeline(uuid) to :DATABASE_VISITOR;
--! EndIncluded crm/lead_timeline.sql
comment on column app_public.lead_timeline_event.event_type is 'What kind of event: created, field_changed, deleted, restored, status_changed, score_changed, assigned, sms_sent, sms_received, email_sent, consent_given, consent_revoked, nurture_enrolled, nurture_step, nurture_completed or nurture_stopped.';

--! Included crm/import_consent_problem.sql
create or replace function app_private.import_consent_problem(consent jsonb) returns text
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_key text;
  v_given timestamptz;
begin
  -- The same rules as consent_records and record_consent, said per row before anything is written, so
  -- that one bad consent never leaves a chunk half imported.
  if import_consent_problem.consent is null or import_consent_problem.consent = 'null'::jsonb then
    return null;
  end if;
  if pg_catalog.jsonb_typeof(import_consent_problem.consent) <> 'object' then
    return 'consent must be an object {disclosure, given_at, page_url, ip, user_agent}';
  end if;
  select k into v_key from pg_catalog.jsonb_object_keys(import_consent_problem.consent) k
   where k not in ('disclosure', 'given_at', 'page_url', 'ip', 'user_agent') limit 1;
  if v_key is not null then
    return pg_catalog.format('consent has an unknown key %s (known: disclosure, given_at, page_url, ip, user_agent)', v_key);
  end if;
  if pg_catalog.jsonb_typeof(import_consent_problem.consent -> 'disclosure') is distinct from 'string'
     or pg_catalog.length(pg_catalog.btrim(import_consent_problem.consent ->> 'disclosure')) not between 20 and 4000 then
    return 'consent needs its disclosure: the words the person agreed to, 20 to 4000 characters';
  end if;
  begin
    v_given := (import_consent_problem.consent ->> 'given_at')::timestamptz;
  exception when others then
    v_given := null;
  end;
  if v_given is null then
    return 'consent needs given_at: when the person agreed, as a date and time (e.g. 2026-11-30T15:04:05Z)';
  end if;
  if v_given > pg_catalog.clock_timestamp() + interval '5 minutes' then
    return 'consent cannot be given in the future';
  end if;
  if import_consent_problem.consent ? 'page_url'
     and not coalesce(import_consent_problem.consent ->> 'page_url' ~* '^https?://[^[:space:]]+\Z'
                      and pg_catalog.length(import_consent_problem.consent ->> 'page_url') <= 2048, false) then
    return 'consent page_url must be an http or https address of at most 2048 characters';
  end if;
  if import_consent_problem.consent ? 'ip' then
    begin
      perform (import_consent_problem.consent ->> 'ip')::inet;
    exception when others then
      return 'consent ip must be an IP address';
    end;
  end if;
  if pg_catalog.length(import_consent_problem.consent ->> 'user_agent') > 1000 then
    return 'consent user_agent must be at most 1000 characters';
  end if;
  return null;
end;
$$;

comment on function app_private.import_consent_problem(jsonb) is $$What is wrong with the consent of an import row ({disclosure, given_at, page_url, ip, user_agent}: the disclosure of 20 to 4000 characters and the time given are required), in words, or null when it is fine or absent. import_lead_rows refuses a call with such a row (22023), before writing anything.$$;
--! EndIncluded crm/import_consent_problem.sql
--! Included crm/import_lead_rows.sql
create or replace function app_private.import_lead_rows(tenant_id uuid, batch_id uuid, rows jsonb) returns app_public.import_batches
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
  v_numbers int[];
  v_first int;
  v_last int;
  v_created int := 0;
  v_merged int := 0;
  v_skipped int := 0;
  v_rejected int := 0;
  v_fast int[] := '{}';
  v_merged_into uuid[] := '{}';
  v_chunk app_private.import_chunk_row[] := '{}';
  v_taken int[] := '{}';
  v_taken_leads uuid[] := '{}';
  v_left app_private.import_chunk_row[];
  v_consent_problem text;
begin
  if rows is null or pg_catalog.jsonb_typeof(rows) <> 'array' then
    raise exception 'Invalid rows: send a JSON array of {row_number, raw, lead, error}' using errcode = '22023';
  end if;
  if pg_catalog.jsonb_array_length(rows) > 5000 then
    raise exception 'Invalid rows: at most 5000 rows per call (got %); send the file in chunks', pg_catalog.jsonb_array_length(rows)
      using errcode = '22023';
  end if;
  -- The first element that is not an object with a whole row_number from 1 up (one query, not a loop).
  select e.ordinality into v_index
    from pg_catalog.jsonb_array_elements(rows) with ordinality e
   where not coalesce(
           case when pg_catalog.jsonb_typeof(e.value) = 'object' and pg_catalog.jsonb_typeof(e.value -> 'row_number') = 'number'
                then (e.value ->> 'row_number')::numeric = pg_catalog.trunc((e.value ->> 'row_number')::numeric)
                     and (e.value ->> 'row_number')::numeric between 1 and 2147483647
           end, false)
   order by e.ordinality
   limit 1;
  if v_index is not null then
    raise exception 'Invalid rows: element % needs a row_number that is a positive whole number', v_index using errcode = '22023';
  end if;
  select (e.value ->> 'row_number')::numeric::int into v_duplicate
  from pg_catalog.jsonb_array_elements(rows) e
  group by 1 having pg_catalog.count(*) > 1
  limit 1;
  if v_duplicate is not null then
    raise exception 'Invalid rows: row_number % appears more than once', v_duplicate using errcode = '22023';
  end if;
  -- A consent given with a row must carry its evidence (see app_private.import_consent_problem).
  select (e.value ->> 'row_number')::numeric::int, app_private.import_consent_problem(e.value -> 'consent') into v_duplicate, v_consent_problem
    from pg_catalog.jsonb_array_elements(rows) e
   where e.value ? 'consent' and app_private.import_consent_problem(e.value -> 'consent') is not null
   limit 1;
  if v_consent_problem is not null then
    raise exception 'Invalid rows: row %: %', v_duplicate, v_consent_problem using errcode = '22023';
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

  -- The duplicate lookups need statistics on leads to use the right index; on a database whose
  -- leads were never analyzed (a first import), gather them now, unless someone else is. (Not from
  -- pg_stats: it hides the statistics of a table under forced row-level security, so every chunk
  -- analyzed leads again, 200 ms on 20,000 leads and more with every lead.)
  if not exists (select 1 from pg_catalog.pg_stat_all_tables t
                  where t.relid = 'app_public.leads'::regclass
                    and coalesce(t.last_analyze, t.last_autoanalyze) is not null) then
    begin
      lock table app_public.leads in share update exclusive mode nowait;
      analyze app_public.leads;
    exception when lock_not_available then
      null;
    end;
  end if;

  -- History (audit log, status history) records these changes as coming from an import.
  perform pg_catalog.set_config('app.change_source', 'import', true);
  -- A row already recorded (a retried chunk) is not processed or counted again. The bounds of the
  -- chunk's row numbers keep the index scan to the chunk's range: on the batch alone it read every row
  -- recorded so far, once per chunk (33 ms per chunk after 20,000 rows, more with every chunk).
  select pg_catalog.array_agg((e.value ->> 'row_number')::numeric::int), pg_catalog.min((e.value ->> 'row_number')::numeric::int),
         pg_catalog.max((e.value ->> 'row_number')::numeric::int)
    into v_numbers, v_first, v_last
    from pg_catalog.jsonb_array_elements(rows) e;
  select coalesce(pg_catalog.array_agg(r.row_number), '{}') into v_done
  from app_public.import_batch_rows r
  where r.tenant_id = v_batch.tenant_id and r.batch_id = v_batch.id
    and r.row_number between v_first and v_last
    and r.row_number = any (v_numbers);

  -- The rows that can only create a lead are inserted together, in one statement, before the others:
  -- the first row of the chunk (in the order of the array, the order the other rows are imported in)
  -- with its phone, when no live lead has that phone; a row without a phone, when no live lead has its
  -- email; and in both cases only when no other row of the chunk has its email. Such a row creates a
  -- lead whatever the rows before it do (merges never change a phone, and give a lead only an email of
  -- their own row), and only rows after it can find that lead. So the outcome is the one of importing
  -- the rows one by one, in order. Any error (a value PostgreSQL refuses, a phone a concurrent writer
  -- just took) undoes this step, and every row takes the path below.
  begin
    -- The rows of the chunk that read as leads, once (both steps below use them): not a row already
    -- recorded, without an error of the file, with only known fields, their values of the right types.
    select coalesce(pg_catalog.array_agg(row(i.ordinality, i.row_number, i.raw,
             pg_catalog.jsonb_populate_record(null::app_public.leads, i.lead))::app_private.import_chunk_row order by i.ordinality), '{}')
      into v_chunk
      from (select e.ordinality, (e.value ->> 'row_number')::numeric::int as row_number, coalesce(e.value -> 'raw', '{}'::jsonb) as raw,
                   app_private.import_lead_given(e.value -> 'lead') as lead
              from pg_catalog.jsonb_array_elements(rows) with ordinality e
             where nullif(pg_catalog.btrim(e.value ->> 'error'), '') is null
               and pg_catalog.jsonb_typeof(e.value -> 'lead') = 'object'
               and (e.value ->> 'row_number')::numeric::int <> all (v_done)
            -- Kept apart (OFFSET 0): pulled up, import_lead_given ran twice per row, once per use of i.lead.
            offset 0) i
     where not exists (select 1 from pg_catalog.jsonb_object_keys(i.lead) k where k <> all (app_private.import_lead_fields()));

    with typed as (
      select c.ordinality, c.row_number, c.raw, c.lead as l from pg_catalog.unnest(v_chunk) c
    ), keyed as (
      select t.ordinality, t.row_number, t.raw, t.l,
             pg_catalog.row_number() over (partition by (t.l).phone order by t.ordinality) as phone_rank,
             pg_catalog.count((t.l).email) over (partition by (t.l).email) as same_email
        from typed t
    ), fast as materialized (
      select k.ordinality, k.row_number, k.raw, k.l, pg_catalog.gen_random_uuid() as lead_id
        from keyed k
       where ((k.l).phone is null or k.phone_rank = 1)
         and ((k.l).email is null or k.same_email = 1)
         and not exists (select 1 from app_public.leads x
                          where (k.l).phone is not null
                            and x.tenant_id = v_batch.tenant_id and x.phone = (k.l).phone and x.deleted_at is null)
         and not exists (select 1 from app_public.leads x
                          where (k.l).phone is null and (k.l).email is not null
                            and x.tenant_id = v_batch.tenant_id and x.email = (k.l).email and x.deleted_at is null)
    ), created as (
      insert into app_public.leads (id, tenant_id, first_name, last_name, phone, email, address, city, region, postal_code,
        country, timezone, source, tags, status, problem_description, job_type, urgency, estimated_value, event_date,
        event_type, service_line, customer_segment, language, attributes)
      select f.lead_id, v_batch.tenant_id, (f.l).first_name, (f.l).last_name, (f.l).phone, (f.l).email, (f.l).address, (f.l).city,
        (f.l).region, (f.l).postal_code, coalesce((f.l).country, v_batch.default_country), (f.l).timezone,
        coalesce((f.l).source, 'import'), coalesce((f.l).tags, '{}'), coalesce((f.l).status, 'new'),
        (f.l).problem_description, (f.l).job_type, coalesce((f.l).urgency, 'normal'), (f.l).estimated_value,
        (f.l).event_date, (f.l).event_type, (f.l).service_line, (f.l).customer_segment, coalesce((f.l).language, 'en'),
        coalesce((f.l).attributes, '{}')
        from fast f
       order by f.ordinality
      returning 1
    ), recorded as (
      insert into app_public.import_batch_rows (tenant_id, batch_id, row_number, raw, result, lead_id)
      select v_batch.tenant_id, v_batch.id, f.row_number, f.raw, 'created', f.lead_id
        from fast f
       order by f.ordinality
      returning row_number
    )
    select coalesce(pg_catalog.array_agg(r.row_number), '{}') into v_fast from recorded r;
  exception
    when deadlock_detected or serialization_failure or lock_not_available then
      raise;
    when others then
      v_chunk := '{}';
      v_fast := '{}';
  end;
  v_created := pg_catalog.cardinality(v_fast);

  -- Then the rows that can only merge into (or, in skip mode, be skipped for) the live lead with their
  -- phone are recorded together: a row whose phone no other row left in the chunk has, when no row
  -- left without a phone has its email or the email of that lead. Nothing else in the chunk can then
  -- find or change that lead: the rows left find a lead by their own phone, or without a phone by
  -- email; and a lead created by the one-statement insert came from an earlier row. So the row sees
  -- the lead as it would one by one, and one update per lead writes the same fields and history.
  -- Any error undoes this step, and its rows take the path below.
  if pg_catalog.cardinality(v_chunk) > 0 then
    begin
      -- The rows left in the chunk, once (uncorrelated NOT IN lists below are hashed, so the checks
      -- grow with the chunk, not with its square).
      v_left := array(select c from pg_catalog.unnest(v_chunk) c
                       where c.row_number not in (select pg_catalog.unnest(v_fast)) order by c.ordinality);
      -- First the leads of the rows whose phone no other row left has, locked in the order of the rows
      -- (as the row path would, one at a time); a lead deleted meanwhile drops out.
      select coalesce(pg_catalog.array_agg(t.row_number order by t.ordinality), '{}'),
             coalesce(pg_catalog.array_agg(t.lead_id order by t.ordinality), '{}')
        into v_taken, v_taken_leads
        from (select r.ordinality, r.row_number, l.id as lead_id
                from pg_catalog.unnest(v_left) r
                join app_public.leads l on l.tenant_id = v_batch.tenant_id and l.phone = (r.lead).phone and l.deleted_at is null
               where (r.lead).phone is not null
                 and (r.lead).phone not in (select (o.lead).phone from pg_catalog.unnest(v_left) o
                                             where (o.lead).phone is not null group by 1 having pg_catalog.count(*) > 1)
               order by r.ordinality
                 for update of l) t;
      -- Then, in a new snapshot, with those leads locked (so they cannot change any more), keep the rows
      -- whose lead still has their phone and is live, when no row left without a phone has the
      -- email of the lead or of the row. The others take the path below.
      select coalesce(pg_catalog.array_agg(t.row_number order by r.ordinality), '{}'),
             coalesce(pg_catalog.array_agg(t.lead_id order by r.ordinality), '{}')
        into v_taken, v_taken_leads
        from rows from (pg_catalog.unnest(v_taken), pg_catalog.unnest(v_taken_leads)) as t(row_number, lead_id)
        join pg_catalog.unnest(v_left) r on r.row_number = t.row_number
        join app_public.leads l on l.tenant_id = v_batch.tenant_id and l.id = t.lead_id
       where l.deleted_at is null and l.phone = (r.lead).phone
         and (l.email is null
              or l.email not in (select (o.lead).email from pg_catalog.unnest(v_left) o
                                  where (o.lead).phone is null and (o.lead).email is not null))
         and ((r.lead).email is null
              or (r.lead).email not in (select (o.lead).email from pg_catalog.unnest(v_left) o
                                         where (o.lead).phone is null and (o.lead).email is not null));

      with taken as (
        select c.ordinality, c.row_number, c.raw, c.lead as n, t.lead_id
          from pg_catalog.unnest(v_chunk) c
          join rows from (pg_catalog.unnest(v_taken), pg_catalog.unnest(v_taken_leads)) as t(row_number, lead_id) on t.row_number = c.row_number
      ), merged as materialized (
        -- Materialized: each field below would otherwise call import_merged_lead again.
        select k.lead_id, o as existing, app_private.import_merged_lead(o, k.n) as m
          from taken k
          join app_public.leads o on o.tenant_id = v_batch.tenant_id and o.id = k.lead_id
      ), changed as (
        -- The columns import_lead_row updates, when the merge changes the lead.
        update app_public.leads l set
          first_name = (x.m).first_name, last_name = (x.m).last_name, email = (x.m).email, address = (x.m).address,
          city = (x.m).city, region = (x.m).region, postal_code = (x.m).postal_code, timezone = (x.m).timezone,
          problem_description = (x.m).problem_description, job_type = (x.m).job_type, estimated_value = (x.m).estimated_value,
          event_date = (x.m).event_date, event_type = (x.m).event_type, service_line = (x.m).service_line,
          customer_segment = (x.m).customer_segment, tags = (x.m).tags, attributes = (x.m).attributes
          from merged x
         where v_batch.mode = 'merge'
           and l.tenant_id = v_batch.tenant_id and l.id = x.lead_id
           and x.m is distinct from x.existing
        returning 1
      )
      insert into app_public.import_batch_rows (tenant_id, batch_id, row_number, raw, result, lead_id, reason)
      select v_batch.tenant_id, v_batch.id, k.row_number, k.raw,
             case v_batch.mode when 'merge' then 'merged' else 'skipped' end, k.lead_id,
             case v_batch.mode when 'merge' then 'Merged into the lead with this phone' else 'A lead with this phone already exists' end
        from taken k
       order by k.ordinality;
    exception
      when deadlock_detected or serialization_failure or lock_not_available then
        raise;
      when others then
        v_taken := '{}';
        v_taken_leads := '{}';
    end;
    if v_batch.mode = 'merge' then
      v_merged := pg_catalog.cardinality(v_taken);
      v_merged_into := v_taken_leads;
    else
      v_skipped := pg_catalog.cardinality(v_taken);
    end if;
  end if;

  for v_item in
    select e.value from pg_catalog.jsonb_array_elements(rows) with ordinality e
     where (e.value ->> 'row_number')::numeric::int not in
           (select pg_catalog.unnest(v_done) union all select pg_catalog.unnest(v_fast) union all select pg_catalog.unnest(v_taken))
     order by e.ordinality
  loop
    v_row := app_private.import_lead_row(v_batch, v_item);
    case v_row.result
      when 'created' then v_created := v_created + 1;
      when 'merged' then
        v_merged := v_merged + 1;
        v_merged_into := v_merged_into || v_row.lead_id;
      when 'skipped' then v_skipped := v_skipped + 1;
      else v_rejected := v_rejected + 1;
    end case;
  end loop;
  -- The leads merged into are rescored by one lead__score job per 500 (their update triggers leave it
  -- to the import: one job per lead cost more than the rest of a merge).
  if pg_catalog.cardinality(v_merged_into) > 0 then
    perform app_private.enqueue_lead_scores(v_merged_into);
  end if;
  perform pg_catalog.set_config('app.change_source', coalesce(v_previous_source, ''), true);
  -- The consent a row carries, for the number of the lead it created or merged into (method import).
  -- Only chunks that carry one read their rows again.
  if exists (select 1 from pg_catalog.jsonb_array_elements(rows) e where pg_catalog.jsonb_typeof(e.value -> 'consent') = 'object') then
    insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, page_url, ip, user_agent,
      given_at, recorded_by_user_id, evidence_hash)
    select v_batch.tenant_id, l.id, 'sms', l.phone, 'marketing', 'import', pg_catalog.btrim(c.consent ->> 'disclosure'),
           c.consent ->> 'page_url', (c.consent ->> 'ip')::inet, c.consent ->> 'user_agent',
           (c.consent ->> 'given_at')::timestamptz, v_batch.created_by_user_id, pg_catalog.repeat('0', 64)
      from (select (e.value ->> 'row_number')::numeric::int as row_number, e.value -> 'consent' as consent
              from pg_catalog.jsonb_array_elements(rows) e
             where pg_catalog.jsonb_typeof(e.value -> 'consent') = 'object') c
      join app_public.import_batch_rows r
        on r.tenant_id = v_batch.tenant_id and r.batch_id = v_batch.id and r.row_number = c.row_number
           and r.result in ('created', 'merged')
      join app_public.leads l on l.tenant_id = r.tenant_id and l.id = r.lead_id and l.phone is not null;
  end if;

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

comment on function app_private.import_lead_rows(uuid, uuid, jsonb) is 'Imports up to 5000 normalised rows into a running batch of the given tenant (imports into the same tenant take turns, transaction by transaction): the rows that can only create a lead (the first of the chunk with a phone no live lead has, or without a phone an email no live lead has, and an email no other row of the chunk has) in one insert; then the rows that can only merge into (or be skipped for) the live lead with their phone (no other row left in the chunk has that phone, and no row left without a phone has its email or the lead''s email) in one update per lead; every other row in its own sub-transaction, in order (a bad row is recorded as rejected, never stops the others), and returns the batch with its counters. Rows already recorded in the batch (a retried chunk) are ignored. Changes are recorded with change_source import; the leads merged into are rescored by lead__score {lead_ids} jobs, one per 500. No permission check: for the command line and app_public.import_rows. Errors: 22023 malformed rows or a finished batch; P0002 unknown batch. A row may carry consent {disclosure, given_at, page_url, ip, user_agent}: recorded as a marketing consent to texts (method import) for the phone of the lead it created or merged into; a consent without its evidence refuses the call (22023).';
--! EndIncluded crm/import_lead_rows.sql
