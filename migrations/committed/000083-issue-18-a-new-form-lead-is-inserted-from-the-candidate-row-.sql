--! Previous: sha1:2fb4d4186f948295594e72d819e6bbcd70e80036
--! Hash: sha1:6a9f93436899cb8dade29dc6b7001cf98fb2d03e
--! Message: Issue 18: a new form lead is inserted from the candidate row its values were checked in, and a submission's idempotency key is unique per tenant and form

-- Issue 18, from re-reading the change: a new form lead is inserted from the candidate row its values
-- were checked in (they were written twice), and a submission's idempotency key is unique per tenant
-- and form.

drop index if exists app_public.lead_form_submissions_one_per_idempotency_key;
create unique index if not exists lead_form_submissions_one_per_idempotency_key on app_public.lead_form_submissions (tenant_id, form_id, idempotency_key)
  where idempotency_key is not null and outcome <> 'refused';

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
  v_country text;
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
     where s.tenant_id = v_form.tenant_id and s.form_id = v_form.id and s.idempotency_key = v_key and s.outcome <> 'refused';
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
  select coalesce(s.country, 'US') into v_country from app_public.business_settings s where s.tenant_id = v_form.tenant_id;
  v_new.country := coalesce(v_new.country, v_country, 'US');
  -- The candidate is also the row a new lead is inserted from, so its values are written once.
  create temporary table if not exists lead_form_candidate (like app_public.leads including defaults including constraints) on commit delete rows;
  delete from pg_temp.lead_form_candidate;
  insert into pg_temp.lead_form_candidate (id, tenant_id, first_name, last_name, phone, email, address, city, region, postal_code, country,
      source, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line, customer_segment,
      language, attributes)
  values (pg_catalog.gen_random_uuid(), v_form.tenant_id, v_new.first_name, v_new.last_name, v_new.phone, v_new.email, v_new.address,
      v_new.city, v_new.region, v_new.postal_code, v_new.country, v_new.source, v_new.problem_description, v_new.job_type,
      coalesce(v_new.urgency, 'normal'), v_new.estimated_value, v_new.event_date, v_new.event_type, v_new.service_line,
      v_new.customer_segment, coalesce(v_new.language, 'en'), coalesce(v_new.attributes, '{}'))
  returning id into v_lead_id;

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
    delete from pg_temp.lead_form_candidate;
  else
    begin
      -- A form set not to route its leads names the one it creates, for the auto-routing trigger.
      if not v_form.route_leads then
        perform pg_catalog.set_config('app.skip_auto_route_for', v_lead_id::text, true);
      end if;
      insert into app_public.leads (id, tenant_id, first_name, last_name, phone, email, address, city, region, postal_code, country,
          source, problem_description, job_type, urgency, estimated_value, event_date, event_type, service_line, customer_segment,
          language, attributes)
      select c.id, c.tenant_id, c.first_name, c.last_name, c.phone, c.email, c.address, c.city, c.region, c.postal_code, c.country,
          c.source, c.problem_description, c.job_type, c.urgency, c.estimated_value, c.event_date, c.event_type, c.service_line,
          c.customer_segment, c.language, c.attributes
        from pg_temp.lead_form_candidate c;
      perform pg_catalog.set_config('app.skip_auto_route_for', '', true);
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

comment on function app_private.submit_lead_form(text, jsonb, text, inet, text, text, text) is $$A submission of a lead form that passed the endpoint’s checks (origin, honeypot, fill time, rate limits, captcha): maps its fields (field_map; a value over 2,000 characters is 22023), checks the values against the table’s rules before matching (the same answer whether a lead exists or not), creates the lead with the form’s source, or merges into the live lead with the same phone (else the same email), filling only what the request is about (problem, job, value, event, service line, segment, tags, attributes), never its contact details, with history (change source webhook; the tenant’s auto-routing runs as for any new lead, unless the form’s route_leads is off; the lead’s country is the business’s unless the form gave one); records the consent to marketing texts for the phone submitted, when the form has a disclosure and its checkbox is ticked (consent_records, method form, with the page, address and browser); logs the submission with the fields sent. The same idempotency key gives the same answer and one lead, even sent concurrently. Errors: P0002 an unknown or disabled form; 22023 no phone and no email, a bad value (the message says which); 40001 a concurrent submission with the same phone (send again).$$;
--! EndIncluded crm/submit_lead_form.sql
