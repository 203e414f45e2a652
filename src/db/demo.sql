-- Demo data: "Demo Plumbing Co", a plumbing business in New York, with a day's work in it.
--
-- Log in as owner@demo.switchboard.test, manager@demo.switchboard.test or agent@demo.switchboard.test,
-- password demo-password-1, and explore through GraphQL (http://127.0.0.1:3000/graphiql):
--
--   people     Olivia Owens (owner), Marcus Miller (manager), Avery Adams (agent, also a routable agent)
--   agents     Avery Adams, Diego Ramirez, Priya Shah (on a call), Sam Okafor (offline): skills, areas, capacity
--   leads      23 leads, new to won, lost and dnc, each with the audit, status, score and assignment
--              history the triggers wrote while the demo changed them (leadTimeline(leadId) tells it in words)
--   routing    two rules. Dana Whitfield (emergency) was offered to Avery by best match and accepted; Kenji
--              Tanaka's offer to Avery is pending (log in as agent@demo.switchboard.test and acceptOffer);
--              Rosa Delgado waits in the queue (nobody does irrigation); Tom Becker (commercial) was offered
--              to Diego, who turned it down, and waits in the reassignment queue until Priya is off her call.
--              explainRouting(leadId) gives the reasons, agent by agent.
--   messaging  the main line +1 212 555 0123; Jordan Blake's missed call became a lead and a conversation
--              (automatic text, two texts from Jordan, Avery's reply)
--   nurture    "Quote follow-up" with three enrollments (one stopped when the lead was won)
--   forms      "Quote request", a web form (POST /f/sbf_de000000000000000000000000000001)
--   events     every change above as a numbered event (eventsAfter), and a webhook endpoint, turned off:
--              point it at your receiver, turn it on and rotate its secret (docs/webhooks.md)
--   CRM        a do-not-contact list, two segments, and what each lead source cost in the month the demo
--              was loaded (leadSourceRoi)
--
-- Lead ids are fixed (00000000-de00-4000-8000-0000000010NN, NN = 01..22), e.g.
--   { leadByRowId(rowId: "00000000-de00-4000-8000-000000001001") { fullName status leadScore } }
--   { explainRouting(leadId: "00000000-de00-4000-8000-000000001004") { nodes { outcome summary candidateLines } } }
--
-- How it is written. Run as the database owner (the owner_all policies apply; row-level security is
-- still forced), in one transaction: all of it or nothing. It goes through the product's own entry
-- points wherever a person, a webhook or a job would: leads are inserted and then changed by the demo's
-- people (so every history row is written by the triggers, naming who did it), routing is
-- app_private.route_lead (what the lead__route job runs) and accept_offer/reject_offer, the missed call
-- is the Twilio webhooks' SQL (record_inbound_call, record_call_status, process_missed_call,
-- record_inbound_message), the reply is send_conversation_reply, enrollments are
-- enroll_lead_in_sequence, scores are app_private.refresh_lead_score (what the lead__score job runs).
-- Acting "as" a person is done the way the API does it: the request settings app.current_user_id,
-- app.current_tenant_id and app.current_session_id, with a short-lived session that is deleted again at
-- the end (helpers in pg_temp below; they vanish with the connection).
--
-- Idempotent: every part is written only when it is missing (fixed ids, unique keys, webhook ids), and a
-- lead's story is played only when the lead is created, so running it again changes nothing, also after
-- you or the worker moved the demo on (only something you deleted may come back). Deterministic: fixed
-- ids, names, numbers and values; what the triggers and functions stamp (timestamps, the ids of the
-- tenant, users, offers, calls, messages) and the scores (they depend on the time since the last
-- contact) are set at load time.
--
-- Side effects. The triggers enqueue graphile-worker jobs as usual (scores, segment counts, the
-- automatic text, nurture steps, offer expiry). Nothing here needs a worker; when one runs (npm start),
-- it picks them up: with the local providers (no Twilio or SMTP configured) texts and emails stay on
-- this machine. Every phone number is in the fictional 555-01xx range and every email address is at
-- example.com; seed() refuses to run when a real SMS or email provider is configured. No text in the
-- demo goes to a number on the do-not-contact list: the database would refuse it anyway (SB001).

begin;

--------------------------------------------------------------------------------
-- Helpers for this script only (pg_temp: gone when the connection ends).
--------------------------------------------------------------------------------

-- The demo tenant: the owner's "Demo Plumbing Co" (created below if missing).
create or replace function pg_temp.demo_tenant() returns uuid
  language sql stable
as $$
  select t.id
  from app_public.tenants t
  join app_public.memberships m on m.tenant_id = t.id and m.role = 'owner'
  join app_public.users u on u.id = m.user_id
  where u.email = 'owner@demo.switchboard.test' and t.business_name = 'Demo Plumbing Co'
  order by t.created_at
  limit 1;
$$;

create or replace function pg_temp.demo_user(email text) returns uuid
  language sql stable
as $$
  select u.id from app_public.users u where u.email = demo_user.email::citext;
$$;

-- From here on in this transaction, act as this demo person (null: as the system, like a worker job).
-- Same settings as the API sets from a token; the session row makes app_public.current_user_id()
-- accept them, and is deleted at the end of the script.
create or replace function pg_temp.demo_act_as(email text) returns void
  language plpgsql
as $$
declare
  v_user uuid := pg_temp.demo_user(demo_act_as.email);
  v_session uuid := pg_catalog.md5('switchboard demo session ' || coalesce(demo_act_as.email, ''))::uuid;
begin
  if demo_act_as.email is not null then
    insert into app_public.user_sessions (id, user_id, tenant_id, expires_at, user_agent)
    values (v_session, v_user, pg_temp.demo_tenant(), now() + interval '1 hour', 'src/db/demo.sql')
    on conflict (id) do nothing;
  end if;
  perform pg_catalog.set_config('app.current_user_id', coalesce(v_user::text, ''), true);
  perform pg_catalog.set_config('app.current_tenant_id', case when v_user is null then '' else pg_temp.demo_tenant()::text end, true);
  perform pg_catalog.set_config('app.current_session_id', case when v_user is null then '' else v_session::text end, true);
end;
$$;

-- Score a lead as the lead__score job does (as the system), then go back to acting as whoever acted.
create or replace function pg_temp.demo_score(lead_id uuid) returns void
  language plpgsql
as $$
declare
  v_user text := pg_catalog.current_setting('app.current_user_id', true);
  v_tenant text := pg_catalog.current_setting('app.current_tenant_id', true);
  v_session text := pg_catalog.current_setting('app.current_session_id', true);
begin
  perform pg_temp.demo_act_as(null);
  perform app_private.refresh_lead_score(demo_score.lead_id);
  perform pg_catalog.set_config('app.current_user_id', coalesce(v_user, ''), true);
  perform pg_catalog.set_config('app.current_tenant_id', coalesce(v_tenant, ''), true);
  perform pg_catalog.set_config('app.current_session_id', coalesce(v_session, ''), true);
end;
$$;

--------------------------------------------------------------------------------
-- 1. The tenant, its people and settings.
--------------------------------------------------------------------------------
do $demo$
declare
  v_password constant text := 'demo-password-1';
  v_owner_id uuid;
  v_manager_id uuid;
  v_agent_id uuid;
  v_tenant_id uuid;
  v_new_tenant boolean := false;
  v_person record;
begin
  -- Users (created only when missing; an existing demo user keeps its password).
  for v_person in
    select * from (values
      ('owner@demo.switchboard.test', 'Olivia', 'Owens', '+15555550101', 'owner'),
      ('manager@demo.switchboard.test', 'Marcus', 'Miller', '+15555550102', 'manager'),
      ('agent@demo.switchboard.test', 'Avery', 'Adams', '+15555550103', 'agent')
    ) as p(email, first_name, last_name, phone_number, role)
  loop
    if not exists (select 1 from app_public.users u where u.email = v_person.email::citext) then
      perform app_private.create_user(v_person.email, v_password);
    end if;
  end loop;

  -- The demo's people are verified: they log in and work at once, as accounts that verified their address.
  update app_public.users u set email_verified_at = u.created_at
  where u.email in ('owner@demo.switchboard.test', 'manager@demo.switchboard.test', 'agent@demo.switchboard.test')
    and u.email_verified_at is null;

  select u.id into v_owner_id from app_public.users u where u.email = 'owner@demo.switchboard.test';
  select u.id into v_manager_id from app_public.users u where u.email = 'manager@demo.switchboard.test';
  select u.id into v_agent_id from app_public.users u where u.email = 'agent@demo.switchboard.test';

  -- The tenant: the demo owner's "Demo Plumbing Co".
  select t.id into v_tenant_id
  from app_public.tenants t
  join app_public.memberships m on m.tenant_id = t.id
  where m.user_id = v_owner_id and m.role = 'owner' and t.business_name = 'Demo Plumbing Co'
  order by t.created_at
  limit 1;
  if v_tenant_id is null then
    v_tenant_id := (app_private.create_tenant('Demo Plumbing Co', v_owner_id, 'America/New_York', 'plumbing', 'Olivia', 'Owens')).id;
    v_new_tenant := true;
  end if;

  -- The tenant's details, profiles, preferences, presence and business settings are set only when the
  -- tenant is created: later loads leave what you (or the demo's people) changed since.
  if v_new_tenant then
    update app_public.tenants t set
      trade_type = 'plumbing',
      business_address = '350 5th Ave, New York, NY 10118',
      business_latitude = 40.74844100,
      business_longitude = -73.98565600,
      service_area_radius = 30,
      onboarding_completed = true,
      onboarding_step = 5
    where t.id = v_tenant_id
      and (t.trade_type, t.business_address, t.business_latitude, t.business_longitude,
           t.service_area_radius, t.onboarding_completed, t.onboarding_step)
        is distinct from ('plumbing', '350 5th Ave, New York, NY 10118', 40.74844100, -73.98565600, 30, true, 5);
  end if;

  -- Members and their profiles.
  if not exists (select 1 from app_public.memberships m where m.tenant_id = v_tenant_id and m.user_id = v_manager_id) then
    perform app_private.add_member(v_tenant_id, v_manager_id, 'manager', v_owner_id, 'Marcus', 'Miller');
  end if;
  if not exists (select 1 from app_public.memberships m where m.tenant_id = v_tenant_id and m.user_id = v_agent_id) then
    perform app_private.add_member(v_tenant_id, v_agent_id, 'agent', v_owner_id, 'Avery', 'Adams');
  end if;

  if v_new_tenant then
    for v_person in
      select * from (values
        (v_owner_id, 'Olivia', 'Owens', 'owner@demo.switchboard.test', '+15555550101'),
        (v_manager_id, 'Marcus', 'Miller', 'manager@demo.switchboard.test', '+15555550102'),
        (v_agent_id, 'Avery', 'Adams', 'agent@demo.switchboard.test', '+15555550103')
      ) as p(user_id, first_name, last_name, email, phone_number)
    loop
      update app_public.user_profiles up set
        first_name = v_person.first_name,
        last_name = v_person.last_name,
        email = v_person.email,
        phone_number = v_person.phone_number
      where up.tenant_id = v_tenant_id and up.user_id = v_person.user_id
        and (up.first_name, up.last_name, up.email::text, up.phone_number)
          is distinct from (v_person.first_name, v_person.last_name, v_person.email, v_person.phone_number);
    end loop;

    -- Preferences and presence.
    update app_public.user_preferences p set ai_takeover_delay = 90, notification_push = false
    where p.user_id = v_owner_id and (p.ai_takeover_delay, p.notification_push) is distinct from (90, false);
    update app_public.user_preferences p set ai_takeover_delay = 30
    where p.user_id = v_agent_id and p.ai_takeover_delay is distinct from 30;

    update app_public.user_status s set is_online = true, status = 'available'
    where s.user_id = v_agent_id and (s.is_online, s.status) is distinct from (true, 'available');
    update app_public.user_status s set is_online = false, status = 'away'
    where s.user_id = v_manager_id and (s.is_online, s.status) is distinct from (false, 'away');

    -- Business settings: open Saturday mornings, a friendlier auto-reply.
    update app_public.business_settings b set
      business_hours = '{"monday":{"open":"08:00","close":"18:00","enabled":true},"tuesday":{"open":"08:00","close":"18:00","enabled":true},"wednesday":{"open":"08:00","close":"18:00","enabled":true},"thursday":{"open":"08:00","close":"18:00","enabled":true},"friday":{"open":"08:00","close":"18:00","enabled":true},"saturday":{"open":"09:00","close":"13:00","enabled":true},"sunday":{"open":"09:00","close":"17:00","enabled":false}}',
      timezone = 'America/New_York',
      auto_response_message = 'Hi, this is Demo Plumbing Co! Sorry we missed your call. Reply here with what''s going on and we''ll get right back to you.',
      ai_greeting_template = 'Hello! I''m here to help with your [TRADE] needs. Is this an emergency (leak, no water, no hot water)?'
    where b.tenant_id = v_tenant_id
      and b.auto_response_message not like 'Hi, this is Demo Plumbing Co!%';
  end if;

  -- Configuration: the defaults (normally added by the tenant__initialize job) plus a few demo values.
  perform app_private.initialize_tenant(v_tenant_id);
  insert into app_public.system_config (tenant_id, key, value, value_type, description)
  values
    (v_tenant_id, 'routing.max_open_leads_per_agent', '5', 'number', 'How many open leads an agent may hold at once.'),
    (v_tenant_id, 'messaging.quiet_hours', '{"start": "21:00", "end": "08:00"}', 'json', 'No automated messages between these local times.'),
    (v_tenant_id, 'leads.default_source', '"web_form"', 'string', 'Source recorded for leads that do not name one.')
  on conflict (tenant_id, key) do nothing;

  -- A web form for the site's quote page (docs/lead-forms.md): POST /f/sbf_de000000000000000000000000000001.
  insert into app_public.lead_forms (tenant_id, public_key, name, allowed_origins, source, consent_disclosure, min_fill_seconds)
  values (v_tenant_id, 'sbf_de000000000000000000000000000001', 'Quote request', '{https://acme-plumbing.example}', 'website',
    'By checking this box I agree to receive marketing texts from Acme Plumbing at the number above, sent with automated technology. Consent is not a condition of purchase. Msg & data rates may apply. Reply STOP to stop, HELP for help.',
    0)
  on conflict on constraint lead_forms_public_key_must_be_unique do nothing;

  -- A webhook endpoint for lead and message events (docs/webhooks.md), turned off until someone points it
  -- at a receiver: updateWebhookEndpointByRowId (url, enabled: true), then rotateWebhookSecret for its secret.
  if not exists (select 1 from app_public.webhook_endpoints w where w.tenant_id = v_tenant_id) then
    insert into app_public.webhook_endpoints (tenant_id, url, description, event_types, enabled, disabled_reason)
    values (v_tenant_id, 'https://hooks.acme-plumbing.example/switchboard', 'CRM sync (demo: point it at your receiver and turn it on)',
      '{lead.created,lead.status_changed,message.received}', false, 'demo: turned off until it points at a real receiver');
  end if;

  -- A nurture sequence to try enrollLeadInSequence with (weekdays 9-17 in each lead's time zone).
  insert into app_public.nurture_sequences (tenant_id, name, description, steps, sending_window)
  values (v_tenant_id, 'Quote follow-up', 'A text the same day, an email two days later, a last text after a week.',
    '[{"channel": "sms", "template": "Hi {{lead.first_name | default: \"there\"}}, thanks for contacting {{tenant.business_name}}! Reply here with any question about your quote."},
      {"channel": "email", "delay": {"days": 2}, "subject": "Your quote from {{tenant.business_name}}", "template": "Hello {{lead.first_name | default: \"there\"}},\n\nJust checking that the quote we sent answers your questions. Call or text us at {{tenant.phone}}."},
      {"channel": "sms", "delay": {"days": 5}, "template": "Still thinking it over, {{lead.first_name | default: \"there\"}}? We can usually come out this week.", "skip_if": {"status": ["hot"]}}]',
    '{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}')
  on conflict (tenant_id, name) do nothing;
end;
$demo$;

--------------------------------------------------------------------------------
-- 2. Agents: who can receive a lead.
--    An agent is a member who logs in (Avery) or an outside person (three technicians, as
--    ServiceTitan would sync them). route_lead checks each one against the lead:
--      skill         a specialization in the lead's service line and customer segment ('any' matches all),
--                    with its proficiency (1-5, used by best match), languages and territories;
--      language      the lead's language among the specialization's (or the agent's) languages;
--      area          a service area (region, city, postal code or radius) containing the lead; none = everywhere;
--      availability  status available (not in_call, break, training, offline);
--      capacity      current_load below max_capacity (an offer or an accepted lead counts);
--      schedule      on duty: inside the agent's working hours, not on time off, not on a business holiday;
--      cap           fewer leads received today and this week than the agent's daily_cap and weekly_cap.
--------------------------------------------------------------------------------
do $demo$
declare
  v_tenant uuid := pg_temp.demo_tenant();
  v_agent record;
begin
  for v_agent in
    select * from (values
      ('00000000-de00-4000-8000-000000002001'::uuid, 'agent@demo.switchboard.test', 'Avery Adams', 'agent',
        '+15555550103', '{en}'::text[], 2, 'available', 5,
        -- Avery: residential plumbing, and the water-heater expert.
        '[{"service_line": "plumbing", "customer_segment": "residential", "proficiency": 4},
          {"service_line": "water_heater", "customer_segment": "residential", "proficiency": 5}]'::jsonb,
        '[{"kind": "city", "city": "New York", "region": "NY"},
          {"kind": "city", "city": "Brooklyn", "region": "NY"}]'::jsonb),
      ('00000000-de00-4000-8000-000000002002'::uuid, null, 'Diego Ramirez', 'technician',
        '+16465550152', '{en,es}'::text[], 1, 'available', 4,
        -- Diego: plumbing for homes and businesses, drains for anyone; Spanish too.
        '[{"service_line": "plumbing", "customer_segment": "residential", "proficiency": 4},
          {"service_line": "plumbing", "customer_segment": "commercial", "proficiency": 3},
          {"service_line": "drain_cleaning", "customer_segment": "any", "proficiency": 5}]'::jsonb,
        -- 15 miles around the shop on 5th Avenue (leads carry latitude/longitude in attributes).
        '[{"kind": "radius", "center_latitude": 40.748441, "center_longitude": -73.985656, "radius_miles": 15}]'::jsonb),
      ('00000000-de00-4000-8000-000000002003'::uuid, null, 'Priya Shah', 'technician',
        '+16465550153', '{en}'::text[], 1, 'in_call', 3,
        -- Priya: the commercial specialist, licensed in New York State only; on a call right now.
        '[{"service_line": "plumbing", "customer_segment": "commercial", "proficiency": 5, "territories": ["NY"]},
          {"service_line": "water_heater", "customer_segment": "commercial", "proficiency": 3, "territories": ["NY"]}]'::jsonb,
        '[{"kind": "region", "region": "NY"}]'::jsonb),
      ('00000000-de00-4000-8000-000000002004'::uuid, null, 'Sam Okafor', 'technician',
        '+13475550154', '{en}'::text[], 1, 'offline', 3,
        -- Sam: an apprentice (proficiency 2) covering two Brooklyn ZIP codes; off today.
        '[{"service_line": "plumbing", "customer_segment": "residential", "proficiency": 2},
          {"service_line": "drain_cleaning", "customer_segment": "residential", "proficiency": 2}]'::jsonb,
        '[{"kind": "postal_code", "postal_code": "11201"}, {"kind": "postal_code", "postal_code": "11215"}]'::jsonb)
    ) as a(id, email, display_name, kind, phone, languages, routing_weight, status, max_capacity, skills, areas)
  loop
    continue when exists (select 1 from app_public.agents a where a.id = v_agent.id);
    insert into app_public.agents (id, tenant_id, user_id, display_name, email, phone, kind, languages, routing_weight)
    values (v_agent.id, v_tenant, pg_temp.demo_user(v_agent.email), v_agent.display_name,
      coalesce(v_agent.email, pg_catalog.lower(pg_catalog.replace(v_agent.display_name, ' ', '.')) || '@example.com'),
      v_agent.phone, v_agent.kind, v_agent.languages, v_agent.routing_weight);
    insert into app_public.agent_specializations (tenant_id, agent_id, service_line, customer_segment, proficiency, territories)
    select v_tenant, v_agent.id, s.service_line, s.customer_segment, s.proficiency, coalesce(s.territories, '{}')
    from pg_catalog.jsonb_to_recordset(v_agent.skills) s(service_line text, customer_segment text, proficiency int, territories text[]);
    insert into app_public.agent_service_areas (tenant_id, agent_id, kind, region, city, postal_code,
      center_latitude, center_longitude, radius_miles)
    select v_tenant, v_agent.id, z.kind, z.region, z.city, z.postal_code, z.center_latitude, z.center_longitude, z.radius_miles
    from pg_catalog.jsonb_to_recordset(v_agent.areas)
      z(kind text, region text, city text, postal_code text, center_latitude numeric, center_longitude numeric, radius_miles numeric);
    insert into app_public.agent_availability (tenant_id, agent_id, status, max_capacity)
    values (v_tenant, v_agent.id, v_agent.status, v_agent.max_capacity)
    on conflict (tenant_id, agent_id) do update set status = excluded.status, max_capacity = excluded.max_capacity;
  end loop;
end;
$demo$;

-- Priya works Monday to Friday, 8:00 to 17:00 (the business's time zone): outside those hours the
-- explanation shows her schedule check failing. (No demo holiday: it would close the demo on that day.)
insert into app_public.agent_working_hours (tenant_id, agent_id, weekday, starts_at, ends_at)
select pg_temp.demo_tenant(), '00000000-de00-4000-8000-000000002003', d, '08:00', '17:00'
  from pg_catalog.generate_series(1, 5) d
 where not exists (select 1 from app_public.agent_working_hours w where w.agent_id = '00000000-de00-4000-8000-000000002003');

-- Diego takes at most 8 leads a day and 30 a week (counted in the business's time zone): the
-- explanation shows the cap check ("daily cap reached (8 of 8)") once he has had his share.
update app_public.agents a set daily_cap = 8, weekly_cap = 30
 where a.id = '00000000-de00-4000-8000-000000002002' and a.daily_cap is null and a.weekly_cap is null;

--------------------------------------------------------------------------------
-- 3. Routing rules. The active rule with the lowest priority whose conditions (the findLeads filter
--    language) match the lead decides; without one, the tenant's default strategy applies (weighted
--    round robin: Avery has weight 2, so she gets twice the leads of a weight-1 technician).
--------------------------------------------------------------------------------
do $demo$
declare
  v_tenant uuid := pg_temp.demo_tenant();
begin
  insert into app_public.routing_rules (id, tenant_id, name, priority, conditions, action, agent_ids, strategy, strategy_params)
  values
    -- Emergencies go to whoever is best at this kind of job: proficiency x recent conversion x tier weight.
    ('00000000-de00-4000-8000-000000003001', v_tenant, 'Emergencies: best match', 10,
      '{"tags_any": ["emergency"]}', 'use_strategy', '{}', 'best_match', '{}'),
    -- Commercial accounts only go to the two technicians who do commercial work, the least loaded first.
    ('00000000-de00-4000-8000-000000003002', v_tenant, 'Commercial accounts: commercial team', 20,
      '{"tags_any": ["commercial"]}', 'route_to_agents',
      '{00000000-de00-4000-8000-000000002003,00000000-de00-4000-8000-000000002002}', 'least_loaded', '{}')
  on conflict (tenant_id, name) do nothing;
end;
$demo$;

--------------------------------------------------------------------------------
-- 4. The main phone line, provisioned the way request_phone_number and the phone_number__provision
--    job do it (the job finds the number already active and does nothing). Calls to it ring the
--    office line (business_settings.forward_to_phone) for ring_timeout_seconds.
--------------------------------------------------------------------------------
do $demo$
declare
  v_tenant uuid := pg_temp.demo_tenant();
  v_number app_public.phone_numbers;
begin
  if exists (select 1 from app_public.phone_numbers p where p.tenant_id = v_tenant and p.phone_number = '+12125550123') then
    return;
  end if;
  perform pg_temp.demo_act_as('owner@demo.switchboard.test');
  v_number := app_public.request_phone_number('212', 'Demo Plumbing main line');
  -- What the local number provisioner answers (src/providers/numbersLocal.ts), with fixed values.
  perform app_private.complete_phone_number_provisioning(v_number.id, pg_catalog.jsonb_build_object(
    'phone_number', '+12125550123',
    'phone_number_sid', 'PN' || pg_catalog.md5('switchboard demo main line'),
    'friendly_name', 'Demo Plumbing main line',
    'region', 'NY',
    'capabilities', pg_catalog.jsonb_build_array('voice', 'sms', 'mms'),
    'webhooks_configured', true,
    'voice_webhook_url', 'http://localhost:3000/webhooks/twilio/voice',
    'sms_webhook_url', 'http://localhost:3000/webhooks/twilio/sms',
    'status_callback_url', 'http://localhost:3000/webhooks/twilio/voice/status',
    'messaging_service', pg_catalog.jsonb_build_object(
      'sid', 'MG' || pg_catalog.md5('switchboard demo main line'),
      'friendly_name', 'Demo Plumbing main line',
      'status_callback', 'http://localhost:3000/webhooks/twilio/sms/status')));
  update app_public.business_settings b set forward_to_phone = '+12125550150'
  where b.tenant_id = v_tenant and b.forward_to_phone is null;
  perform pg_temp.demo_act_as(null);
end;
$demo$;

--------------------------------------------------------------------------------
-- 5. Leads and their stories. Each lead is inserted as a web form, an import or an ad platform would
--    (status new), scored, then lived: routed, assigned by Marcus, and moved along the funnel by the
--    person who owns it. Every change goes through the leads table, so the triggers write
--    lead_audit_log, lead_status_history, lead_score_history and lead_assignments, and name who acted.
--    Funnel: new -> contacted -> qualified -> hot -> won; nurturing and cold beside contacted;
--    outcomes won, lost (with a reason) and dnc (the number goes on the do-not-contact list).
--------------------------------------------------------------------------------
do $demo$
declare
  v_tenant uuid := pg_temp.demo_tenant();
  v_marcus uuid := pg_temp.demo_user('manager@demo.switchboard.test');
  v_sequence uuid;
  v_lead record;
  v_id uuid;
  v_status text;
  v_step int;
  v_history bigint;
  v_offer app_public.routing_offers;
  v_timeout jsonb;
  v_actor text;
  v_agent_user text;
begin
  select s.id into v_sequence from app_public.nurture_sequences s where s.tenant_id = v_tenant and s.name = 'Quote follow-up';

  for v_lead in
    select * from (values
      -- id suffix, first, last, phone, email, address, city, region, postal code, lat, lon,
      -- source, tags, urgency, problem, job type, service line, segment, language, estimated value,
      -- route ('accept', 'pending', 'queue', 'reject' or null), owner (assigned by Marcus),
      -- statuses to walk, after which step to enroll in "Quote follow-up", values set with the last status
      ('01', 'Dana', 'Whitfield', '+12125550111', 'dana.whitfield@example.com', '230 E 30th St, Apt 5B', 'New York', 'NY', '10016', 40.7430, -73.9790,
        'google_ads', '{emergency,residential}'::text[], 'emergency', 'Burst pipe under the kitchen sink, water on the floor.', 'leak_repair', 'plumbing', 'residential', 'en', 650,
        'accept', null, '{contacted,qualified}'::text[], null::int, '{"appointment": true}'::jsonb),
      ('02', 'Kenji', 'Tanaka', '+17185550112', 'kenji.tanaka@example.com', '512 7th Ave', 'Brooklyn', 'NY', '11215', 40.6640, -73.9850,
        'website', '{residential}', 'high', 'Water heater is 15 years old and leaking; wants a quote for a tankless one.', 'water_heater', 'water_heater', 'residential', 'en', 2400,
        'pending', null, '{}', null, null),
      ('03', 'Rosa', 'Delgado', '+19145550113', 'rosa.delgado@example.com', '88 Palisade Ave', 'Yonkers', 'NY', '10701', 40.9360, -73.8990,
        'yelp', '{residential}', 'normal', 'Necesito revisar el sistema de riego del jardin antes del invierno.', 'irrigation', 'irrigation', 'residential', 'es', 900,
        'queue', null, '{}', null, null),
      ('04', 'Tom', 'Becker', '+12125550114', 'tom.becker@example.com', '1 Penn Plaza, Suite 210', 'New York', 'NY', '10001', 40.7500, -73.9920,
        'google_ads', '{commercial}', 'high', 'Office restrooms backing up on the 2nd floor.', 'drain_repair', 'plumbing', 'commercial', 'en', 5200,
        'reject', null, '{}', null, null),
      ('05', 'Grace', 'Kim', '+16465550115', 'grace.kim@example.com', '145 W 11th St', 'New York', 'NY', '10011', 40.7360, -74.0000,
        'referral', '{residential,repeat_customer}', 'normal', 'Replace the bathroom faucet and shower valve.', 'fixture_install', 'plumbing', 'residential', 'en', 350,
        null, 'agent', '{contacted,qualified,hot,won}', null, '{"conversion_value": 420}'),
      ('06', 'Luis', 'Ortega', '+17185550116', 'luis.ortega@example.com', '67-12 Yellowstone Blvd', 'Queens', 'NY', '11375', 40.7210, -73.8470,
        'angi', '{residential}', 'normal', 'Slow drains in the basement.', 'drain_cleaning', 'drain_cleaning', 'residential', 'es', 275,
        null, 'manager', '{contacted,qualified,won}', null, '{"conversion_value": 310}'),
      ('07', 'Hannah', 'Lee', '+12125550117', 'hannah.lee@example.com', '600 W 113th St', 'New York', 'NY', '10025', 40.8060, -73.9640,
        'google_ads', '{}', 'low', 'Running toilet.', 'toilet_repair', 'plumbing', 'residential', 'en', 180,
        null, 'agent', '{contacted,lost}', null, '{"lost_reason": "Chose a cheaper quote"}'),
      ('08', 'Omar', 'Haddad', '+17185550118', 'omar.haddad@example.com', '75 Henry St', 'Brooklyn', 'NY', '11201', 40.6990, -73.9930,
        'yelp', '{}', 'normal', 'Low water pressure in the shower.', null, 'plumbing', 'residential', 'en', 450,
        null, 'manager', '{contacted,cold}', null, null),
      ('09', 'Bianca', 'Rossi', '+19175550119', 'bianca.rossi@example.com', '1641 3rd Ave', 'New York', 'NY', '10128', 40.7820, -73.9510,
        'website', '{residential}', 'normal', 'Thinking about a new water heater this spring.', 'water_heater', 'water_heater', 'residential', 'en', 1800,
        null, 'agent', '{contacted,nurturing}', 2, null),
      ('10', 'Wei', 'Zhang', '+17185550120', 'wei.zhang@example.com', '41-60 Main St', 'Queens', 'NY', '11354', 40.7590, -73.8300,
        'google_ads', '{}', 'normal', 'Asked for a quote to repipe an old house.', 'repipe', 'plumbing', 'residential', 'en', 7500,
        null, 'manager', '{contacted,nurturing}', 2, null),
      ('11', 'Aisha', 'Bello', '+16465550121', 'aisha.bello@example.com', '2280 Frederick Douglass Blvd', 'New York', 'NY', '10027', 40.8110, -73.9500,
        'facebook_ads', '{}', 'high', 'Asked us to stop calling: the landlord fixed it.', null, 'plumbing', 'residential', 'en', 300,
        null, 'agent', '{contacted,dnc}', null, null),
      ('12', 'Peter', 'Novak', '+12015550122', 'peter.novak@example.com', '30 Montgomery St', 'Jersey City', 'NJ', '07302', 40.7160, -74.0380,
        'angi', '{}', 'normal', 'Dishwasher hookup.', 'appliance_hookup', 'plumbing', 'residential', 'en', 600,
        null, null, '{}', null, null),
      ('13', 'Sofia', 'Marino', '+17185550124', 'sofia.marino@example.com', '100 Richmond Terrace', 'Staten Island', 'NY', '10301', 40.6440, -74.0770,
        'referral', '{}', 'normal', 'Outdoor spigot leaks.', null, 'plumbing', 'residential', 'en', null,
        null, null, '{}', null, null),
      ('14', 'Ethan', 'Brooks', '+12125550125', 'ethan.brooks@example.com', '60 Hudson St', 'New York', 'NY', '10013', 40.7180, -74.0080,
        'google_ads', '{commercial}', 'normal', 'Restaurant needs a grease trap serviced.', 'grease_trap', 'plumbing', 'commercial', 'en', 3500,
        null, 'manager', '{contacted,qualified}', null, null),
      ('15', 'Fatima', 'Noor', '+17185550126', 'fatima.noor@example.com', '950 Fulton St', 'Brooklyn', 'NY', '11238', 40.6830, -73.9640,
        'website', '{residential}', 'high', 'No hot water since yesterday.', 'water_heater', 'water_heater', 'residential', 'en', 2100,
        null, 'agent', '{contacted,qualified,hot}', null, null),
      ('16', 'George', 'Papadopoulos', '+19175550127', 'george.papadopoulos@example.com', '31-10 Ditmars Blvd', 'Queens', 'NY', '11105', 40.7750, -73.9120,
        'yelp', '{}', 'normal', 'Garbage disposal jammed.', 'disposal_repair', 'plumbing', 'residential', 'en', 250,
        null, 'manager', '{contacted}', null, null),
      ('17', 'Isabel', 'Cruz', '+13475550128', 'isabel.cruz@example.com', '3030 Riverdale Ave', 'Bronx', 'NY', '10463', 40.8830, -73.9090,
        'google_ads', '{residential}', 'normal', 'Clogged main line, wanted a price first.', 'drain_cleaning', 'drain_cleaning', 'residential', 'es', 200,
        null, 'agent', '{contacted,nurturing,won}', 2, '{"conversion_value": 240}'),
      ('18', 'Jamal', 'Carter', '+16465550129', 'jamal.carter@example.com', '2460 Adam Clayton Powell Jr Blvd', 'New York', 'NY', '10030', 40.8180, -73.9420,
        'facebook_ads', '{}', 'low', null, null, null, null, 'en', null,
        null, 'manager', '{contacted,cold}', null, null),
      ('19', 'Nina', 'Petrova', '+12125550130', 'nina.petrova@example.com', '200 W 67th St', 'New York', 'NY', '10023', 40.7760, -73.9860,
        'website', '{}', 'normal', 'Radiator valve replacement.', 'heating', 'plumbing', 'residential', 'en', 800,
        null, 'agent', '{contacted,qualified,lost}', null, '{"lost_reason": "The building super did the repair"}'),
      ('20', 'Liam', 'O''Connor', '+17185550131', 'liam.oconnor@example.com', '210 Sterling Pl', 'Brooklyn', 'NY', '11217', 40.6750, -73.9710,
        'google_ads', '{residential,emergency}', 'emergency', 'Sewage backing up into the basement.', 'sewer_repair', 'plumbing', 'residential', 'en', 950,
        null, 'agent', '{contacted,hot}', null, null),
      ('21', 'Mei', 'Chen', '+19175550132', 'mei.chen@example.com', '55 Delancey St', 'New York', 'NY', '10002', 40.7190, -73.9900,
        'referral', '{}', 'normal', 'Water heater makes a banging noise.', 'water_heater', 'water_heater', 'residential', 'en', 1500,
        null, null, '{}', null, null),
      -- An email-only lead (a web form without a phone number): it can get emails, never texts.
      ('22', 'Noah', 'Schwartz', null, 'noah.schwartz@example.com', null, 'Hoboken', 'NJ', '07030', 40.7440, -74.0320,
        'website', '{}', 'low', 'Question about a kitchen remodel.', null, null, null, 'en', null,
        null, null, '{}', null, null)
    ) as l(n, first_name, last_name, phone, email, address, city, region, postal_code, latitude, longitude,
           source, tags, urgency, problem, job_type, service_line, segment, language, estimated_value,
           route, owner, statuses, enroll_after, finish)
  loop
    v_id := ('00000000-de00-4000-8000-0000000010' || v_lead.n)::uuid;
    -- A lead's story is played once, when it is created.
    continue when exists (select 1 from app_public.leads l where l.id = v_id);
    -- Captured (as the system: a form, an ad platform or an import); the timezone is derived from the
    -- area code, the lead__score job is enqueued, and the lead is scored as that job would.
    perform pg_temp.demo_act_as(null);
    insert into app_public.leads (id, tenant_id, first_name, last_name, phone, email, address, city, region, postal_code,
      source, tags, urgency, problem_description, job_type, service_line, customer_segment, language, estimated_value, attributes)
    values (v_id, v_tenant, v_lead.first_name, v_lead.last_name, v_lead.phone, v_lead.email, v_lead.address, v_lead.city,
      v_lead.region, v_lead.postal_code, v_lead.source, v_lead.tags, v_lead.urgency, v_lead.problem, v_lead.job_type,
      v_lead.service_line, v_lead.segment, v_lead.language, v_lead.estimated_value,
      pg_catalog.jsonb_build_object('latitude', v_lead.latitude, 'longitude', v_lead.longitude));
    perform pg_temp.demo_score(v_id);
    -- Homeowners who asked for a quote on the web form ticked the box for texts (the evidence of it,
    -- which a marketing or nurture text needs); the two commercial leads did not.
    if v_lead.segment is distinct from 'commercial' and v_lead.phone is not null then
      insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, page_url, ip,
        user_agent, given_at, evidence_hash)
      values (v_tenant, v_id, 'sms', v_lead.phone, 'marketing', 'form',
        'By checking this box I agree to receive marketing texts from Acme Plumbing at the number above, sent with automated technology. Consent is not a condition of purchase. Msg & data rates may apply. Reply STOP to stop, HELP for help.',
        'https://acme-plumbing.example/quote', ('203.0.113.' || (v_lead.n::int + 10))::inet,
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
        now() - interval '1 minute', pg_catalog.repeat('0', 64));
    end if;

    -- Routing, as the lead__route job does it for a new lead (trigger new_lead), then the offer answered.
    if v_lead.route is not null then
      if v_lead.route = 'pending' then
        -- This offer stays open a week instead of the tenant's 120 s, so that you can log in as Avery
        -- and accept it yourself (the setting is put back right after).
        select c.value into v_timeout from app_public.system_config c
        where c.tenant_id = v_tenant and c.key = 'routing.offer_timeout_seconds';
        update app_public.system_config c set value = '604800'
        where c.tenant_id = v_tenant and c.key = 'routing.offer_timeout_seconds';
      end if;
      v_history := app_private.route_lead(v_tenant, v_id, 'new_lead');
      if v_lead.route = 'pending' then
        update app_public.system_config c set value = coalesce(v_timeout, '120')
        where c.tenant_id = v_tenant and c.key = 'routing.offer_timeout_seconds';
      end if;
      if v_lead.route = 'reject' then
        -- The first agent turns it down (Marcus answers for a technician, who has no login);
        -- reject_offer routes the lead on at once, leaving that agent out.
        select o.* into v_offer from app_public.routing_offers o where o.tenant_id = v_tenant and o.lead_id = v_id and o.status = 'pending';
        if v_offer.id is not null then
          perform pg_temp.demo_act_as('manager@demo.switchboard.test');
          perform app_public.reject_offer(v_offer.id, 'On a job in Queens until 4 pm');
        end if;
      end if;
      if v_lead.route = 'accept' then
        select o.* into v_offer from app_public.routing_offers o where o.tenant_id = v_tenant and o.lead_id = v_id and o.status = 'pending';
        if v_offer.id is not null then
          -- The agent accepts in the app; a technician's offer is accepted by the manager on their behalf.
          select u.email into v_agent_user from app_public.agents a join app_public.users u on u.id = a.user_id
          where a.tenant_id = v_tenant and a.id = v_offer.agent_id;
          perform pg_temp.demo_act_as(coalesce(v_agent_user, 'manager@demo.switchboard.test'));
          perform app_public.accept_offer(v_offer.id);
        end if;
      end if;
    end if;

    -- Assigned by Marcus (the manager), who records why.
    if v_lead.owner is not null then
      perform pg_temp.demo_act_as('manager@demo.switchboard.test');
      perform app_public.reassign_lead(v_id, pg_temp.demo_user(v_lead.owner || '@demo.switchboard.test'),
        case v_lead.owner when 'agent' then 'Avery covers this area' else 'Marcus takes this one himself' end);
    end if;

    -- Down the funnel, each step by the person who owns the lead (else Marcus), each one a separate
    -- change: one status-history row per step, and a new score after each (as the lead__score job).
    v_actor := coalesce((select u.email::text from app_public.leads l join app_public.users u on u.id = l.owner_user_id where l.id = v_id),
      'manager@demo.switchboard.test');
    v_step := 0;
    foreach v_status in array v_lead.statuses loop
      v_step := v_step + 1;
      perform pg_temp.demo_act_as(v_actor);
      if v_step = pg_catalog.cardinality(v_lead.statuses) and v_lead.finish is not null then
        update app_public.leads l set
          status = v_status,
          conversion_value = coalesce((v_lead.finish ->> 'conversion_value')::numeric, l.conversion_value),
          lost_reason = coalesce(v_lead.finish ->> 'lost_reason', l.lost_reason),
          -- A visit tomorrow at 10:00, New York time.
          appointment_at = case when (v_lead.finish ->> 'appointment')::boolean
            then (pg_catalog.date_trunc('day', now() at time zone 'America/New_York') + interval '1 day 10 hours') at time zone 'America/New_York'
            else l.appointment_at end
        where l.id = v_id;
      else
        update app_public.leads l set
          status = v_status,
          last_contact_at = case when v_status = 'contacted' then now() else l.last_contact_at end
        where l.id = v_id;
      end if;
      perform pg_temp.demo_score(v_id);
      if v_step = v_lead.enroll_after and v_sequence is not null then
        -- Enrolled by hand (enrollLeadInSequence): the first text goes out at the next opening of
        -- the sequence's sending window (weekdays 9-17, the lead's time), within the legal hours.
        perform app_public.enroll_lead_in_sequence(v_sequence, v_id);
      end if;
    end loop;
  end loop;
  perform pg_temp.demo_act_as(null);
end;
$demo$;

--------------------------------------------------------------------------------
-- 6. A missed call that became a lead and a conversation, through the SQL the Twilio webhooks call:
--    Jordan Blake rings the main line, nobody picks up within the ring timeout, so the call is missed;
--    process_missed_call (the call__process_missed job) creates the lead (source missed_call), starts
--    the conversation and queues the automatic text. Jordan texts back, which would let the AI
--    assistant take over after Olivia's ai_takeover_delay (90 s), but Avery answers first
--    (sendConversationReply), so the conversation stays with a person.
--------------------------------------------------------------------------------
do $demo$
declare
  v_tenant uuid := pg_temp.demo_tenant();
  v_call_sid constant text := 'CA' || pg_catalog.md5('switchboard demo call jordan blake');
  v_customer constant text := '+17185550177';
  v_line constant text := '+12125550123';
  v_call uuid;
  v_conversation uuid;
  v_lead uuid;
begin
  if exists (select 1 from app_public.calls c where c.call_sid = v_call_sid) then
    return;
  end if;
  perform pg_temp.demo_act_as(null);
  -- The incoming-call webhook (/webhooks/twilio/voice): recorded, forwarded to the office line.
  perform app_private.record_inbound_call(v_call_sid, v_customer, v_line, 'ringing', 'Brooklyn', 'NY', 'US');
  -- The status webhook: the forwarded leg was not answered, so the call is missed (call__process_missed is enqueued).
  select s.call_id into v_call from app_private.record_call_status(v_call_sid, v_customer, v_line, 'completed', 31, 'no-answer', 0) s;
  -- What the call__process_missed job does (when the worker runs it later, it finds the call processed).
  perform app_private.process_missed_call(v_call);
  select c.lead_id, c.conversation_id into v_lead, v_conversation from app_public.calls c where c.id = v_call;

  -- Jordan texts back (/webhooks/twilio/sms).
  perform app_private.record_inbound_message('SM' || pg_catalog.md5('switchboard demo text jordan 1'), v_customer, v_line,
    'Hi, I just called. Water is dripping through my kitchen ceiling from the upstairs bathroom. Can someone come today?');

  -- Marcus gives the lead to Avery, who answers in the conversation (a person, so the AI stays out).
  perform pg_temp.demo_act_as('manager@demo.switchboard.test');
  perform app_public.reassign_lead(v_lead, pg_temp.demo_user('agent@demo.switchboard.test'), 'Avery is on call for leaks today');
  perform pg_temp.demo_act_as('agent@demo.switchboard.test');
  perform app_public.send_conversation_reply(v_conversation,
    'Hi, this is Avery from Demo Plumbing, sorry we missed your call! I can be there by 3 pm today. What''s the address?',
    'demo:jordan-blake:reply-1');
  perform pg_temp.demo_act_as(null);
  perform app_private.record_inbound_message('SM' || pg_catalog.md5('switchboard demo text jordan 2'), v_customer, v_line,
    'Great, thank you! 41 Prospect Park West, apartment 3.');

  -- Avery fills in what she learned and marks the lead contacted.
  perform pg_temp.demo_act_as('agent@demo.switchboard.test');
  update app_public.leads l set
    first_name = 'Jordan', last_name = 'Blake', address = '41 Prospect Park West, Apt 3', postal_code = '11215',
    problem_description = 'Leak through the kitchen ceiling from the upstairs bathroom.', job_type = 'leak_repair',
    service_line = 'plumbing', customer_segment = 'residential', urgency = 'high', estimated_value = 400,
    attributes = l.attributes || '{"latitude": 40.6700, "longitude": -73.9700}'
  where l.id = v_lead;
  update app_public.leads l set status = 'contacted' where l.id = v_lead;
  perform pg_temp.demo_score(v_lead);
  perform pg_temp.demo_act_as(null);
end;
$demo$;

--------------------------------------------------------------------------------
-- 7. Do-not-contact list. Aisha Bello's number is already on it (her status became dnc above). Marcus
--    adds two numbers by hand, as the API's createDncList would; removal goes through
--    removeFromDncList (managers, with a reason). Every change is in dncAuditLog.
--------------------------------------------------------------------------------
do $demo$
declare
  v_tenant uuid := pg_temp.demo_tenant();
begin
  -- Once added (dncAuditLog remembers), a number removed by hand stays removed.
  if exists (select 1 from app_public.dnc_audit_log a where a.tenant_id = v_tenant and a.phone = '+12125550199') then
    return;
  end if;
  perform pg_temp.demo_act_as('manager@demo.switchboard.test');
  insert into app_public.dnc_list (tenant_id, phone, reason, source, added_by_user_id)
  values
    (v_tenant, '+12125550199', 'Asked on the phone never to be called again', 'manual', pg_temp.demo_user('manager@demo.switchboard.test')),
    (v_tenant, '+17185550198', 'Wrong number: not a customer', 'manual', pg_temp.demo_user('manager@demo.switchboard.test'))
  on conflict (tenant_id, phone) do nothing;
  perform pg_temp.demo_act_as(null);
end;
$demo$;

--------------------------------------------------------------------------------
-- 8. Segments (saved filters; leadCount is computed on save and refreshed after lead changes) and
--    what each lead source cost in the month the demo leads came in (for leadSourceRoi).
--------------------------------------------------------------------------------
do $demo$
declare
  v_tenant uuid := pg_temp.demo_tenant();
  v_period text;
begin
  perform pg_temp.demo_act_as('manager@demo.switchboard.test');
  insert into app_public.segments (id, tenant_id, name, description, filter)
  values
    ('00000000-de00-4000-8000-000000004001', v_tenant, 'Hot and qualified', 'Open leads worth a visit this week.',
      '{"status": ["qualified", "hot"]}'),
    ('00000000-de00-4000-8000-000000004002', v_tenant, 'Emergencies', 'Everything tagged emergency, whatever its status.',
      '{"tags_any": ["emergency"]}')
  on conflict (tenant_id, name) do nothing;

  -- The month of the demo's first lead (New York time): stable however often this runs.
  select pg_catalog.to_char(pg_catalog.min(l.created_at) at time zone 'America/New_York', 'YYYY-MM') into v_period
  from app_public.leads l where l.tenant_id = v_tenant and l.id = '00000000-de00-4000-8000-000000001001';
  if v_period is not null then
    insert into app_public.lead_source_costs (tenant_id, source, period, cost, notes)
    values
      (v_tenant, 'google_ads', v_period, 1200.00, 'Search ads, "plumber near me"'),
      (v_tenant, 'yelp', v_period, 300.00, 'Yelp Ads'),
      (v_tenant, 'angi', v_period, 450.00, 'Angi leads, pay per lead'),
      (v_tenant, 'facebook_ads', v_period, 250.00, 'Boosted posts'),
      (v_tenant, 'website', v_period, 99.00, 'Hosting and the booking form')
    on conflict (tenant_id, source, period) do nothing;
  end if;
  perform pg_temp.demo_act_as(null);
end;
$demo$;

--------------------------------------------------------------------------------
-- The sessions the script acted with are gone again; nobody can log in with them.
--------------------------------------------------------------------------------
delete from app_public.user_sessions s
where s.id in (
  pg_catalog.md5('switchboard demo session owner@demo.switchboard.test')::uuid,
  pg_catalog.md5('switchboard demo session manager@demo.switchboard.test')::uuid,
  pg_catalog.md5('switchboard demo session agent@demo.switchboard.test')::uuid);

commit;
