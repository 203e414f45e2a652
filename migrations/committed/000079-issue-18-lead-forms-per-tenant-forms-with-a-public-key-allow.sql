--! Previous: sha1:e3a75be4effa9dd49f3e778b5f30553754ef4a02
--! Hash: sha1:e643aef987c4d0b65a1603fc890e33d2610163db
--! Message: Issue 18: lead forms: per-tenant forms with a public key, allowed origins, a field map, a consent disclosure and a minimum fill time, managed by owners and admins; app_private.submit_lead_form maps the fields, creates or merges the lead with its history, records the consent given and logs the submission, idempotent by key and serialized by phone; refused submissions are logged with their reason

-- Issue 18, part 1: public lead forms. A form of a business has a public key; POST /f/<key> (the API
-- server) checks the origin, the honeypot, the fill time, rate limits and an optional captcha, then calls
-- app_private.submit_lead_form, which maps the fields, creates or merges the lead with its history,
-- records the consent the person gave, and logs the submission. Idempotent by key.

--! Included crm/lead_form_field_map_problem.sql
create or replace function app_hidden.lead_form_field_map_problem(field_map jsonb) returns text
  language plpgsql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_field text;
  v_target text;
begin
  if pg_catalog.jsonb_typeof(lead_form_field_map_problem.field_map) is distinct from 'object' then
    return 'the field map must be a JSON object {"form field": "lead field"}';
  end if;
  if (select pg_catalog.count(*) from pg_catalog.jsonb_object_keys(lead_form_field_map_problem.field_map)) > 50 then
    return 'the field map may name at most 50 form fields';
  end if;
  for v_field, v_target in select e.key, e.value #>> '{}' from pg_catalog.jsonb_each(lead_form_field_map_problem.field_map) e loop
    if v_field !~ '^[A-Za-z0-9_.-]{1,100}\Z' then
      return pg_catalog.format('form field name %s must be 1 to 100 letters, digits, _ . or -', pg_catalog.quote_literal(v_field));
    end if;
    if pg_catalog.jsonb_typeof(lead_form_field_map_problem.field_map -> v_field) <> 'string'
       or not (v_target = any (array['first_name', 'last_name', 'name', 'phone', 'email', 'address', 'city', 'region', 'postal_code',
                                    'country', 'problem_description', 'job_type', 'urgency', 'estimated_value', 'event_date',
                                    'event_type', 'service_line', 'customer_segment', 'language'])
               or v_target ~ '^attributes\.[a-z0-9_]{1,60}\Z') then
      return pg_catalog.format('form field %s maps to %s, which is no lead field (first_name, last_name, name, phone, email, address, city, region, postal_code, country, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line, customer_segment, language, or attributes.<key>)',
        pg_catalog.quote_literal(v_field), coalesce(pg_catalog.quote_literal(v_target), 'nothing'));
    end if;
  end loop;
  return null;
end;
$$;

comment on function app_hidden.lead_form_field_map_problem(jsonb) is $$What is wrong with the field map of a lead form, in words, or null: an object of at most 50 form field names (letters, digits, _ . -) each mapped to a lead field (first_name, last_name, name, which is split into first and last, phone, email, address, city, region, postal_code, country, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line, customer_segment, language) or to attributes.<key>. Used by the check constraint of lead_forms.$$;
grant execute on function app_hidden.lead_form_field_map_problem(jsonb) to :DATABASE_VISITOR;
--! EndIncluded crm/lead_form_field_map_problem.sql

create table if not exists app_public.lead_forms (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  public_key text not null default 'sbf_' || pg_catalog.encode(public.gen_random_bytes(16), 'hex'),
  name text not null,
  allowed_origins text[] not null default '{}',
  field_map jsonb not null default '{"first_name": "first_name", "last_name": "last_name", "name": "name", "phone": "phone", "email": "email", "message": "problem_description", "postal_code": "postal_code", "zip": "postal_code", "city": "city", "state": "region"}',
  source text not null default 'web_form',
  consent_disclosure text,
  consent_field text not null default 'sms_consent',
  min_fill_seconds int not null default 3,
  captcha_required boolean not null default false,
  enabled boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint lead_forms_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint lead_forms_public_key_must_be_unique unique (public_key),
  constraint lead_forms_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint lead_forms_name_must_be_1_to_200_characters check (pg_catalog.length(pg_catalog.btrim(name)) between 1 and 200),
  constraint lead_forms_allowed_origins_must_be_at_most_20_http_origins check (
    pg_catalog.cardinality(allowed_origins) <= 20
    and pg_catalog.array_to_string(allowed_origins, ' ') ~ '^(https?://[a-z0-9.-]+(:[0-9]{1,5})?( |\Z))*\Z'),
  constraint lead_forms_field_map_must_map_form_fields_to_lead_fields check (app_hidden.lead_form_field_map_problem(field_map) is null),
  constraint lead_forms_source_must_be_1_to_100_characters check (pg_catalog.length(pg_catalog.btrim(source)) between 1 and 100),
  constraint lead_forms_consent_disclosure_must_be_20_to_4000_characters check (
    consent_disclosure is null or pg_catalog.length(pg_catalog.btrim(consent_disclosure)) between 20 and 4000),
  constraint lead_forms_consent_field_must_be_a_field_name check (consent_field ~ '^[A-Za-z0-9_.-]{1,100}\Z'),
  constraint lead_forms_min_fill_seconds_must_be_0_to_3600 check (min_fill_seconds between 0 and 3600)
);
comment on table app_public.lead_forms is $$A form on the business’s website that creates leads: POST /f/<publicKey> (JSON or a plain HTML form post). Managed by owners and admins; every member can read them. See docs/lead-forms.md.$$;
comment on column app_public.lead_forms.id is 'The form’s id.';
comment on column app_public.lead_forms.tenant_id is 'The business it belongs to.';
comment on column app_public.lead_forms.public_key is 'The key in the form’s address (/f/<publicKey>); public by design: it only lets the world submit this form.';
comment on column app_public.lead_forms.name is 'A name for people (1 to 200 characters).';
comment on column app_public.lead_forms.allowed_origins is 'The web origins (https://example.com, scheme, host and port, lower case; at most 20) whose pages may post the form from a browser (CORS). A post from another origin is refused (403). Posts without an Origin header (servers, curl) are not browsers and are accepted.';
comment on column app_public.lead_forms.field_map is 'Form field name to lead field: first_name, last_name, name (split into first and last), phone, email, address, city, region, postal_code, country, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line, customer_segment, language, or attributes.<key>. Other fields are ignored.';
comment on column app_public.lead_forms.source is 'The source of the leads it creates (1 to 100 characters), e.g. web_form or spring_landing_page.';
comment on column app_public.lead_forms.consent_disclosure is 'The words next to the consent checkbox (20 to 4000 characters). When set and the checkbox (consent_field) is ticked, the submission records a consent to marketing texts for the lead’s phone, with the page, address, browser and time (consent_records, method form).';
comment on column app_public.lead_forms.consent_field is 'The name of the consent checkbox field (default sms_consent): on, true, yes or 1 means ticked.';
comment on column app_public.lead_forms.min_fill_seconds is 'The least time (0 to 3600 seconds, default 3) between loading the form (the signed token of GET /f/<key>/token, sent back as _token) and sending it; faster is a bot. 0 for a form without script (no token needed).';
comment on column app_public.lead_forms.captcha_required is 'Whether a submission must carry a captcha answer (cf-turnstile-response, h-captcha-response or captcha) that the configured verifier accepts (CAPTCHA_VERIFY_URL, the Turnstile and hCaptcha siteverify API).';
comment on column app_public.lead_forms.enabled is 'A disabled form refuses every submission (404, as an unknown one).';
comment on column app_public.lead_forms.created_at is 'When it was created.';
comment on column app_public.lead_forms.updated_at is 'When it was last changed.';

drop trigger if exists _100_timestamps on app_public.lead_forms;
create trigger _100_timestamps before insert or update on app_public.lead_forms for each row execute function app_private.tg__timestamps();

alter table app_public.lead_forms enable row level security;
alter table app_public.lead_forms force row level security;
drop policy if exists owner_all on app_public.lead_forms;
create policy owner_all on app_public.lead_forms for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_current_tenant on app_public.lead_forms;
create policy select_current_tenant on app_public.lead_forms for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists insert_as_admin on app_public.lead_forms;
create policy insert_as_admin on app_public.lead_forms for insert to :DATABASE_VISITOR
  with check (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')));
drop policy if exists update_as_admin on app_public.lead_forms;
create policy update_as_admin on app_public.lead_forms for update to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')))
  with check (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists delete_as_admin on app_public.lead_forms;
create policy delete_as_admin on app_public.lead_forms for delete to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')));
grant select, delete on app_public.lead_forms to :DATABASE_VISITOR;
grant insert (name, allowed_origins, field_map, source, consent_disclosure, consent_field, min_fill_seconds, captcha_required, enabled),
  update (name, allowed_origins, field_map, source, consent_disclosure, consent_field, min_fill_seconds, captcha_required, enabled)
  on app_public.lead_forms to :DATABASE_VISITOR;

create table if not exists app_public.lead_form_submissions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  form_id uuid not null,
  received_at timestamptz not null default clock_timestamp(),
  outcome text not null,
  reason text,
  lead_id uuid,
  idempotency_key text,
  client_address inet,
  origin text,
  page_url text,
  user_agent text,
  constraint lead_form_submissions_form_must_exist foreign key (tenant_id, form_id) references app_public.lead_forms (tenant_id, id) on delete cascade,
  constraint lead_form_submissions_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete set null (lead_id),
  constraint lead_form_submissions_outcome_must_be_known check (outcome in ('created', 'merged', 'refused')),
  constraint lead_form_submissions_refusals_have_a_reason check ((outcome = 'refused') = (reason is not null)),
  constraint lead_form_submissions_idempotency_key_must_be_at_most_200 check (pg_catalog.length(idempotency_key) between 1 and 200),
  constraint lead_form_submissions_texts_must_be_bounded check (
    pg_catalog.length(origin) <= 300 and pg_catalog.length(page_url) <= 2048 and pg_catalog.length(user_agent) <= 1000 and pg_catalog.length(reason) <= 300)
);
comment on table app_public.lead_form_submissions is $$@behavior -insert -update -delete
Every submission of a lead form, accepted (created or merged into a lead) or refused (with its reason: honeypot, too_fast, bad_token, captcha, origin, invalid…; submissions refused by a rate limit are counted, not logged). Written by the form endpoint only; members read their business’s.$$;
comment on column app_public.lead_form_submissions.id is 'The submission’s id.';
comment on column app_public.lead_form_submissions.tenant_id is 'The business of the form.';
comment on column app_public.lead_form_submissions.form_id is 'The form.';
comment on column app_public.lead_form_submissions.received_at is 'When it arrived.';
comment on column app_public.lead_form_submissions.outcome is 'created (a new lead), merged (into the live lead with the same phone, or without one the same email) or refused.';
comment on column app_public.lead_form_submissions.reason is 'Why it was refused (null when accepted).';
comment on column app_public.lead_form_submissions.lead_id is 'The lead it created or merged into.';
comment on column app_public.lead_form_submissions.idempotency_key is 'The Idempotency-Key header or _submission_id field: the same key gives the same answer and one lead, however often it is sent.';
comment on column app_public.lead_form_submissions.client_address is 'The address it came from.';
comment on column app_public.lead_form_submissions.origin is 'The Origin header (the site of the page), when a browser sent it.';
comment on column app_public.lead_form_submissions.page_url is 'The page it was sent from (the _page field, else the Referer header).';
comment on column app_public.lead_form_submissions.user_agent is 'The browser that sent it.';

create unique index if not exists lead_form_submissions_one_per_idempotency_key on app_public.lead_form_submissions (form_id, idempotency_key)
  where idempotency_key is not null and outcome <> 'refused';
create index if not exists lead_form_submissions_by_form on app_public.lead_form_submissions (tenant_id, form_id, received_at desc);
create index if not exists lead_form_submissions_by_lead on app_public.lead_form_submissions (tenant_id, lead_id) where lead_id is not null;

alter table app_public.lead_form_submissions enable row level security;
alter table app_public.lead_form_submissions force row level security;
drop policy if exists owner_all on app_public.lead_form_submissions;
create policy owner_all on app_public.lead_form_submissions for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_current_tenant on app_public.lead_form_submissions;
create policy select_current_tenant on app_public.lead_form_submissions for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.lead_form_submissions to :DATABASE_VISITOR;

--! Included crm/lead_form_settings.sql
create or replace function app_private.lead_form_settings(public_key text)
  returns table (form_id uuid, tenant_id uuid, allowed_origins text[], phone_fields text[], min_fill_seconds int,
                 captcha_required boolean, consent_field text)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select f.id, f.tenant_id, f.allowed_origins,
         array(select e.key from pg_catalog.jsonb_each_text(f.field_map) e where e.value = 'phone' order by e.key),
         f.min_fill_seconds, f.captcha_required, f.consent_field
    from app_public.lead_forms f
   where f.public_key = lead_form_settings.public_key and f.enabled;
$$;

comment on function app_private.lead_form_settings(text) is $$What the form endpoint checks before a submission reaches the database: the enabled form with this public key (no row for an unknown or disabled one), its allowed origins, the form fields that carry the phone (normalised by the endpoint with libphonenumber), its minimum fill time, whether it needs a captcha, and its consent checkbox.$$;
--! EndIncluded crm/lead_form_settings.sql
--! Included crm/refuse_lead_form_submission.sql
create or replace function app_private.refuse_lead_form_submission(form_id uuid, reason text, idempotency_key text, client_address inet,
    origin text, page_url text, user_agent text) returns uuid
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_public.lead_form_submissions (tenant_id, form_id, outcome, reason, idempotency_key, client_address, origin, page_url, user_agent)
  select f.tenant_id, f.id, 'refused', pg_catalog.left(refuse_lead_form_submission.reason, 300),
         pg_catalog.left(refuse_lead_form_submission.idempotency_key, 200), refuse_lead_form_submission.client_address,
         pg_catalog.left(refuse_lead_form_submission.origin, 300), pg_catalog.left(refuse_lead_form_submission.page_url, 2048),
         pg_catalog.left(refuse_lead_form_submission.user_agent, 1000)
    from app_public.lead_forms f where f.id = refuse_lead_form_submission.form_id
  returning id;
$$;

comment on function app_private.refuse_lead_form_submission(uuid, text, text, inet, text, text, text) is $$Logs a submission the form endpoint refused (honeypot, too_fast, bad_token, captcha, origin, invalid…), creating nothing else. Returns its id.$$;
--! EndIncluded crm/refuse_lead_form_submission.sql
--! Included crm/submit_lead_form.sql
create or replace function app_private.submit_lead_form(public_key text, fields jsonb, idempotency_key text, client_address inet,
    origin text, page_url text, user_agent text)
  returns table (outcome text, submission_id uuid, lead_id uuid)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_form app_public.lead_forms;
  v_key text := nullif(pg_catalog.btrim(submit_lead_form.idempotency_key), '');
  v_given jsonb := '{}';
  v_attributes jsonb := '{}';
  v_field text;
  v_target text;
  v_value text;
  v_new app_public.leads;
  v_old app_public.leads;
  v_lead_id uuid;
  v_outcome text;
  v_submission uuid;
  v_previous_source text := pg_catalog.current_setting('app.change_source', true);
begin
  select f.* into v_form from app_public.lead_forms f where f.public_key = submit_lead_form.public_key and f.enabled;
  if not found then
    raise exception 'No such form' using errcode = 'P0002';
  end if;
  if pg_catalog.jsonb_typeof(submit_lead_form.fields) is distinct from 'object' then
    raise exception 'The form’s fields must be an object of names and values' using errcode = '22023';
  end if;
  if pg_catalog.length(v_key) > 200 then
    raise exception 'The idempotency key must be at most 200 characters' using errcode = '22023';
  end if;
  -- The same key gives the same answer and one lead: concurrent sends wait for the first.
  if v_key is not null then
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('lead-form:' || v_form.id || ':' || v_key, 0));
    select s.outcome, s.id, s.lead_id into v_outcome, v_submission, v_lead_id
      from app_public.lead_form_submissions s
     where s.form_id = v_form.id and s.idempotency_key = v_key and s.outcome <> 'refused';
    if found then
      return query select v_outcome, v_submission, v_lead_id;
      return;
    end if;
  end if;

  -- The mapped fields; a blank value is not given; a value is at most 2,000 characters.
  for v_field, v_target in select e.key, e.value from pg_catalog.jsonb_each_text(v_form.field_map) e loop
    v_value := nullif(pg_catalog.btrim(submit_lead_form.fields ->> v_field), '');
    continue when v_value is null;
    if pg_catalog.length(v_value) > 2000 then
      raise exception 'The field % is too long (at most 2,000 characters)', v_field using errcode = '22023';
    end if;
    if v_target = 'name' then
      -- A full name: the last word is the last name. A first_name or last_name field of its own wins.
      v_given := case when v_value ~ '\s'
                      then pg_catalog.jsonb_build_object('first_name', pg_catalog.regexp_replace(v_value, '\s+\S+\Z', ''),
                                                         'last_name', pg_catalog.substring(v_value, '(\S+)\Z'))
                      else pg_catalog.jsonb_build_object('first_name', v_value) end || v_given;
    elsif v_target like 'attributes.%' then
      v_attributes := v_attributes || pg_catalog.jsonb_build_object(pg_catalog.substr(v_target, 12), v_value);
    else
      v_given := v_given || pg_catalog.jsonb_build_object(v_target, v_value);
    end if;
  end loop;
  v_given := pg_catalog.jsonb_strip_nulls(v_given) || pg_catalog.jsonb_build_object('source', v_form.source, 'attributes', v_attributes);
  if not (v_given ? 'phone' or v_given ? 'email') then
    raise exception 'A form needs a phone number or an email address to create a lead' using errcode = '22023';
  end if;
  -- Types, the E.164 domain and the email format are checked by the casts and the table.
  v_new := pg_catalog.jsonb_populate_record(null::app_public.leads, v_given);

  perform pg_catalog.set_config('app.change_source', 'webhook', true);
  -- The live lead it duplicates: same phone, else (without a phone) same email; merged into, as an import
  -- in merge mode does (the lead keeps what it has and gets what it was missing), with its history.
  -- Submissions with one phone (or email) take turns, so that sent together they make one lead.
  if v_new.phone is not null then
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('lead-form-phone:' || v_form.tenant_id::text || ':' || v_new.phone, 0));
  end if;
  if v_new.email is not null then
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('import:' || v_form.tenant_id::text || ':' || pg_catalog.lower(v_new.email::text), 0));
  end if;
  if v_new.phone is not null then
    select l.* into v_old from app_public.leads l
     where l.tenant_id = v_form.tenant_id and l.phone = v_new.phone and l.deleted_at is null for update;
  else
    select l.* into v_old from app_public.leads l
     where l.tenant_id = v_form.tenant_id and l.email = v_new.email and l.deleted_at is null
     order by l.created_at, l.id limit 1 for update;
  end if;
  if v_old.id is not null then
    v_new := app_private.import_merged_lead(v_old, v_new);
    update app_public.leads l set first_name = v_new.first_name, last_name = v_new.last_name, email = v_new.email,
        address = v_new.address, city = v_new.city, region = v_new.region, postal_code = v_new.postal_code,
        problem_description = v_new.problem_description, job_type = v_new.job_type, estimated_value = v_new.estimated_value,
        event_date = v_new.event_date, event_type = v_new.event_type, service_line = v_new.service_line,
        customer_segment = v_new.customer_segment, tags = v_new.tags, attributes = v_new.attributes
     where l.id = v_old.id;
    v_lead_id := v_old.id;
    v_outcome := 'merged';
  else
    begin
      insert into app_public.leads (tenant_id, first_name, last_name, phone, email, address, city, region, postal_code, country,
          source, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line, customer_segment,
          language, attributes)
      values (v_form.tenant_id, v_new.first_name, v_new.last_name, v_new.phone, v_new.email, v_new.address, v_new.city, v_new.region,
          v_new.postal_code, coalesce(v_new.country, 'US'), v_new.source, v_new.problem_description, v_new.job_type,
          coalesce(v_new.urgency, 'normal'), v_new.estimated_value, v_new.event_date, v_new.event_type, v_new.service_line,
          v_new.customer_segment, coalesce(v_new.language, 'en'), coalesce(v_new.attributes, '{}'))
      returning id into v_lead_id;
    exception when unique_violation then
      -- An import created the lead with this phone at the same moment.
      raise exception 'Another lead with this phone number was created at the same moment; send it again' using errcode = '40001';
    end;
    v_outcome := 'created';
  end if;
  perform pg_catalog.set_config('app.change_source', coalesce(v_previous_source, ''), true);

  insert into app_public.lead_form_submissions (tenant_id, form_id, outcome, lead_id, idempotency_key, client_address, origin, page_url, user_agent)
  values (v_form.tenant_id, v_form.id, v_outcome, v_lead_id, v_key, submit_lead_form.client_address,
          pg_catalog.left(submit_lead_form.origin, 300), pg_catalog.left(submit_lead_form.page_url, 2048),
          pg_catalog.left(submit_lead_form.user_agent, 1000))
  returning id into v_submission;

  -- The consent the person gave by ticking the box next to the disclosure, with its evidence.
  -- Without the page (or at least the site), the address and the browser there is no evidence to keep,
  -- and no consent is recorded: marketing then waits for one.
  v_value := case when pg_catalog.length(submit_lead_form.page_url) <= 2048 and submit_lead_form.page_url ~* '^https?://[^[:space:]]+\Z'
                    then submit_lead_form.page_url
                  when submit_lead_form.origin ~* '^https?://[^[:space:]]+\Z' then pg_catalog.left(submit_lead_form.origin, 300) end;
  if v_form.consent_disclosure is not null and v_new.phone is not null
     and pg_catalog.lower(pg_catalog.btrim(submit_lead_form.fields ->> v_form.consent_field)) in ('on', 'true', 'yes', '1')
     and v_value is not null and submit_lead_form.client_address is not null and nullif(pg_catalog.btrim(submit_lead_form.user_agent), '') is not null then
    insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, page_url, ip, user_agent,
      given_at, recorded_by_user_id, evidence_hash)
    values (v_form.tenant_id, v_lead_id, 'sms', v_new.phone, 'marketing', 'form', v_form.consent_disclosure, v_value,
      submit_lead_form.client_address, pg_catalog.left(submit_lead_form.user_agent, 1000), pg_catalog.clock_timestamp(), null,
      pg_catalog.repeat('0', 64));
  end if;
  return query select v_outcome, v_submission, v_lead_id;
end;
$$;

comment on function app_private.submit_lead_form(text, jsonb, text, inet, text, text, text) is $$A submission of a lead form that passed the endpoint’s checks (origin, honeypot, fill time, rate limits, captcha): maps its fields (field_map; a value over 2,000 characters is 22023), creates the lead with the form’s source, or merges into the live lead with the same phone (else the same email) as an import in merge mode does, with history (change source webhook; the tenant’s auto-routing runs as for any new lead); records the consent to marketing texts when the form has a disclosure and its checkbox is ticked (consent_records, method form, with the page, address and browser); logs the submission. The same idempotency key gives the same answer and one lead, even sent concurrently. Errors: P0002 an unknown or disabled form; 22023 no phone and no email, a bad value (the message says which); 40001 a concurrent submission with the same phone (send again).$$;
--! EndIncluded crm/submit_lead_form.sql
