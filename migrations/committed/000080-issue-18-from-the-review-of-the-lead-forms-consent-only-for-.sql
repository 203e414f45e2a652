--! Previous: sha1:e643aef987c4d0b65a1603fc890e33d2610163db
--! Hash: sha1:584d3d7a4545441c577e8f4f7923860aaad8bcb4
--! Message: Issue 18: from the review of the lead forms: consent only for the phone submitted; values checked before a lead is matched, so the answer does not say whether a lead exists; a merge from a form changes no contact detail of the lead, and the submission keeps the fields sent; field names JavaScript objects have are refused; an empty idempotency key counts as none

-- Issue 18: what the review of the lead forms (000079) found. Consent only for the phone submitted (a
-- merge by email took the lead's phone); values checked before a lead is matched (the answer said whether
-- a lead existed); a merge from an anonymous form changes no contact detail of the lead, and the
-- submission keeps the fields sent; form field names that JavaScript objects already have are refused;
-- an empty idempotency key counts as none.

alter table app_public.lead_form_submissions add column if not exists fields jsonb;
comment on column app_public.lead_form_submissions.fields is 'The lead fields it sent, as mapped (for a merge, what the lead did not take: a form never changes a lead’s name, email or address).';
alter table app_public.lead_form_submissions drop constraint if exists lead_form_submissions_fields_must_be_a_small_object;
alter table app_public.lead_form_submissions add constraint lead_form_submissions_fields_must_be_a_small_object
  check (fields is null or (pg_catalog.jsonb_typeof(fields) = 'object' and pg_catalog.pg_column_size(fields) <= 65536));

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
    if v_field !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z' or v_field in ('constructor', 'prototype', 'toString', 'valueOf', 'hasOwnProperty') then
      return pg_catalog.format('form field name %s must be 1 to 100 letters, digits, _ . or -, start with a letter or digit (names starting with _ are the form''s own: _token, _hp, _page, _submission_id), and not be a name JavaScript objects already have', pg_catalog.quote_literal(v_field));
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

comment on function app_hidden.lead_form_field_map_problem(jsonb) is $$What is wrong with the field map of a lead form, in words, or null: an object of at most 50 form field names (letters, digits, _ . -, starting with a letter or digit, not constructor, prototype, toString, valueOf or hasOwnProperty) each mapped to a lead field (first_name, last_name, name, which is split into first and last, phone, email, address, city, region, postal_code, country, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line, customer_segment, language) or to attributes.<key>. Used by the check constraint of lead_forms.$$;
grant execute on function app_hidden.lead_form_field_map_problem(jsonb) to :DATABASE_VISITOR;
--! EndIncluded crm/lead_form_field_map_problem.sql
--! Included crm/refuse_lead_form_submission.sql
create or replace function app_private.refuse_lead_form_submission(form_id uuid, reason text, idempotency_key text, client_address inet,
    origin text, page_url text, user_agent text) returns uuid
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_public.lead_form_submissions (tenant_id, form_id, outcome, reason, idempotency_key, client_address, origin, page_url, user_agent)
  select f.tenant_id, f.id, 'refused', pg_catalog.left(refuse_lead_form_submission.reason, 300),
         pg_catalog.left(nullif(pg_catalog.btrim(refuse_lead_form_submission.idempotency_key), ''), 200), refuse_lead_form_submission.client_address,
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
  v_submitted_phone text;
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
  -- Types and the E.164 domain are checked by the casts; the table's own checks on a candidate row of the
  -- same shape, before anything is matched, so that the answer is the same whether a lead exists or not.
  v_new := pg_catalog.jsonb_populate_record(null::app_public.leads, v_given);
  v_submitted_phone := v_new.phone;
  create temporary table if not exists lead_form_candidate (like app_public.leads including defaults including constraints) on commit delete rows;
  insert into pg_temp.lead_form_candidate (tenant_id, first_name, last_name, phone, email, address, city, region, postal_code, country,
      source, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line, customer_segment,
      language, attributes)
  values (v_form.tenant_id, v_new.first_name, v_new.last_name, v_new.phone, v_new.email, v_new.address, v_new.city, v_new.region,
      v_new.postal_code, coalesce(v_new.country, 'US'), v_new.source, v_new.problem_description, v_new.job_type,
      coalesce(v_new.urgency, 'normal'), v_new.estimated_value, v_new.event_date, v_new.event_type, v_new.service_line,
      v_new.customer_segment, coalesce(v_new.language, 'en'), coalesce(v_new.attributes, '{}'));
  delete from pg_temp.lead_form_candidate;

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
    -- Anyone may post a form with a customer's number: a merge changes none of the lead's contact details
    -- (name, email, address), only fills what the request is about; the submission keeps what was sent.
    v_new := app_private.import_merged_lead(v_old, v_new);
    update app_public.leads l set
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

  insert into app_public.lead_form_submissions (tenant_id, form_id, outcome, lead_id, fields, idempotency_key, client_address, origin, page_url, user_agent)
  values (v_form.tenant_id, v_form.id, v_outcome, v_lead_id, v_given - 'source', v_key, submit_lead_form.client_address,
          pg_catalog.left(submit_lead_form.origin, 300), pg_catalog.left(submit_lead_form.page_url, 2048),
          pg_catalog.left(submit_lead_form.user_agent, 1000))
  returning id into v_submission;

  -- The consent the person gave by ticking the box next to the disclosure, with its evidence.
  -- Without the page (or at least the site), the address and the browser there is no evidence to keep,
  -- and no consent is recorded: marketing then waits for one.
  v_value := case when pg_catalog.length(submit_lead_form.page_url) <= 2048 and submit_lead_form.page_url ~* '^https?://[^[:space:]]+\Z'
                    then submit_lead_form.page_url
                  when submit_lead_form.origin ~* '^https?://[^[:space:]]+\Z' then pg_catalog.left(submit_lead_form.origin, 300) end;
  if v_form.consent_disclosure is not null and v_submitted_phone is not null
     and pg_catalog.lower(pg_catalog.btrim(submit_lead_form.fields ->> v_form.consent_field)) in ('on', 'true', 'yes', '1')
     and v_value is not null and submit_lead_form.client_address is not null and nullif(pg_catalog.btrim(submit_lead_form.user_agent), '') is not null then
    insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, page_url, ip, user_agent,
      given_at, recorded_by_user_id, evidence_hash)
    values (v_form.tenant_id, v_lead_id, 'sms', v_submitted_phone, 'marketing', 'form', v_form.consent_disclosure, v_value,
      submit_lead_form.client_address, pg_catalog.left(submit_lead_form.user_agent, 1000), pg_catalog.clock_timestamp(), null,
      pg_catalog.repeat('0', 64));
  end if;
  return query select v_outcome, v_submission, v_lead_id;
end;
$$;

comment on function app_private.submit_lead_form(text, jsonb, text, inet, text, text, text) is $$A submission of a lead form that passed the endpoint’s checks (origin, honeypot, fill time, rate limits, captcha): maps its fields (field_map; a value over 2,000 characters is 22023), checks the values against the table’s rules before matching (the same answer whether a lead exists or not), creates the lead with the form’s source, or merges into the live lead with the same phone (else the same email), filling only what the request is about (problem, job, value, event, service line, segment, tags, attributes), never its contact details, with history (change source webhook; the tenant’s auto-routing runs as for any new lead); records the consent to marketing texts for the phone submitted, when the form has a disclosure and its checkbox is ticked (consent_records, method form, with the page, address and browser); logs the submission with the fields sent. The same idempotency key gives the same answer and one lead, even sent concurrently. Errors: P0002 an unknown or disabled form; 22023 no phone and no email, a bad value (the message says which); 40001 a concurrent submission with the same phone (send again).$$;
--! EndIncluded crm/submit_lead_form.sql
