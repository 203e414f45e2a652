-- Demo data: one plumbing business with an owner, a manager and an agent.
-- Run as the database owner (row-level security is forced; the owner_all policies apply).
-- Idempotent: running it again changes nothing and duplicates nothing.
-- Log in as owner@demo.switchboard.test, manager@demo.switchboard.test or
-- agent@demo.switchboard.test, password demo-password-1.
do $demo$
declare
  v_password constant text := 'demo-password-1';
  v_owner_id uuid;
  v_manager_id uuid;
  v_agent_id uuid;
  v_tenant_id uuid;
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
  end if;

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

  -- Members and their profiles.
  if not exists (select 1 from app_public.memberships m where m.tenant_id = v_tenant_id and m.user_id = v_manager_id) then
    perform app_private.add_member(v_tenant_id, v_manager_id, 'manager', v_owner_id, 'Marcus', 'Miller');
  end if;
  if not exists (select 1 from app_public.memberships m where m.tenant_id = v_tenant_id and m.user_id = v_agent_id) then
    perform app_private.add_member(v_tenant_id, v_agent_id, 'agent', v_owner_id, 'Avery', 'Adams');
  end if;

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

  -- Configuration: the defaults (normally added by the tenant__initialize job) plus a few demo values.
  perform app_private.initialize_tenant(v_tenant_id);
  insert into app_public.system_config (tenant_id, key, value, value_type, description)
  values
    (v_tenant_id, 'routing.max_open_leads_per_agent', '5', 'number', 'How many open leads an agent may hold at once.'),
    (v_tenant_id, 'messaging.quiet_hours', '{"start": "21:00", "end": "08:00"}', 'json', 'No automated messages between these local times.'),
    (v_tenant_id, 'leads.default_source', '"web_form"', 'string', 'Source recorded for leads that do not name one.')
  on conflict (tenant_id, key) do nothing;

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
