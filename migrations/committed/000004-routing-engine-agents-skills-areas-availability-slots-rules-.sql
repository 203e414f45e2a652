--! Previous: sha1:4f27a46041b4ef2d08c75587f821fc22d0c91921
--! Hash: sha1:c170e189f0cdac7d962cadaebb36053739aefcaf
--! Message: routing engine: agents, skills, areas, availability, slots, rules, experiments, route_lead, offers, queue, history

--! split: 010-routing-model.sql
--------------------------------------------------------------------------------
-- Routing data model: who can receive leads (agents, their skills, areas, availability,
-- calendar slots, performance), how leads are routed (rules, experiments, the weighted
-- round-robin credit ledger), and what happened (offers, queue, routing history, events).
-- Logic lives in the files after this one. Idempotent: drops what it creates.
--------------------------------------------------------------------------------

drop table if exists app_public.city_event_stats, app_public.tracking_numbers, app_public.routing_events,
  app_public.lead_routing_history, app_public.routing_offers, app_public.assignment_queue,
  app_public.lead_experiment_assignments, app_public.routing_experiment_variants, app_public.routing_experiments,
  app_public.routing_rules, app_public.agent_routing_credits, app_public.agent_performance_metrics,
  app_public.availability_slots, app_public.agent_availability, app_public.agent_service_areas,
  app_public.agent_specializations, app_public.agents cascade;
drop function if exists app_private.tg_agent_availability__check_actor() cascade;
drop function if exists app_private.tg_availability_slots__check_actor() cascade;
alter table app_public.leads drop column if exists owner_agent_id;
alter table app_public.lead_assignments drop column if exists from_agent_id, drop column if exists to_agent_id;

--------------------------------------------------------------------------------
-- Agents
--------------------------------------------------------------------------------
create table app_public.agents (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  user_id uuid,
  display_name text not null,
  email public.citext,
  phone app_public.e164_phone,
  kind text not null default 'agent',
  external_source text,
  external_id text,
  languages text[] not null default '{en}',
  routing_weight int not null default 1,
  is_active boolean not null default true,
  timezone text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint agents_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint agents_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint agents_user_must_be_a_member foreign key (tenant_id, user_id)
    references app_public.memberships (tenant_id, user_id) on delete set null (user_id),
  constraint agents_display_name_must_not_be_blank check (pg_catalog.btrim(display_name) <> ''),
  constraint agents_kind_must_be_known check (kind in ('agent', 'dj', 'technician', 'external')),
  constraint agents_external_id_needs_a_source check ((external_id is null) = (external_source is null)),
  constraint agents_languages_must_not_be_empty check (pg_catalog.cardinality(languages) > 0),
  constraint agents_routing_weight_must_be_between_1_and_100 check (routing_weight between 1 and 100)
);
create unique index agents_user_must_be_unique_per_tenant on app_public.agents (tenant_id, user_id) where user_id is not null;
create unique index agents_external_id_must_be_unique_per_tenant on app_public.agents (tenant_id, external_source, external_id)
  where external_id is not null;
create index agents_active on app_public.agents (tenant_id) where is_active;
comment on table app_public.agents is 'Anyone who can receive a lead: a member of the tenant (user_id), or an outside person such as a DJ on the marketplace or a ServiceTitan technician (external_source + external_id).';
comment on column app_public.agents.id is 'The agent''s id.';
comment on column app_public.agents.tenant_id is 'The tenant the agent works for.';
comment on column app_public.agents.user_id is 'The member this agent is, when the agent logs in to Switchboard.';
comment on column app_public.agents.display_name is 'Name shown in routing decisions and to the lead.';
comment on column app_public.agents.email is 'Email address for notifications.';
comment on column app_public.agents.phone is 'Phone number (E.164) for offers and call forwarding.';
comment on column app_public.agents.kind is 'agent (inside sales/service), dj, technician or external.';
comment on column app_public.agents.external_source is 'The system external_id comes from (e.g. servicetitan, dj_marketplace).';
comment on column app_public.agents.external_id is 'The agent''s id in external_source.';
comment on column app_public.agents.languages is 'Languages the agent speaks (BCP 47 tags such as en, es).';
comment on column app_public.agents.routing_weight is 'Share in weighted round robin (1 to 100): an agent with weight 2 gets twice the leads of weight 1.';
comment on column app_public.agents.is_active is 'Inactive agents are never routed to.';
comment on column app_public.agents.timezone is 'The agent''s IANA timezone, if different from the tenant''s.';
comment on column app_public.agents.created_at is 'When the agent was added.';
comment on column app_public.agents.updated_at is 'When the agent last changed.';

create table app_public.agent_specializations (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  agent_id uuid not null,
  service_line text not null,
  customer_segment text not null default 'any',
  proficiency int not null default 3,
  languages text[] not null default '{}',
  territories text[] not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint agent_specializations_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint agent_specializations_must_be_unique_per_agent_line_and_segment unique (tenant_id, agent_id, service_line, customer_segment),
  constraint agent_specializations_proficiency_must_be_between_1_and_5 check (proficiency between 1 and 5),
  constraint agent_specializations_service_line_must_not_be_blank check (pg_catalog.btrim(service_line) <> ''),
  constraint agent_specializations_customer_segment_must_not_be_blank check (pg_catalog.btrim(customer_segment) <> '')
);
create index agent_specializations_by_line on app_public.agent_specializations (tenant_id, service_line, customer_segment);
comment on table app_public.agent_specializations is 'What an agent is good at: a service or insurance line (e.g. auto, home, plumbing, wedding) for a customer segment (or ''any''), with a proficiency from 1 to 5, and optionally the languages and territories (regions such as FL) this specialization covers.';
comment on column app_public.agent_specializations.id is 'The row''s id.';
comment on column app_public.agent_specializations.tenant_id is 'The tenant.';
comment on column app_public.agent_specializations.agent_id is 'The agent.';
comment on column app_public.agent_specializations.service_line is 'Service or insurance line, matched against leads.service_line.';
comment on column app_public.agent_specializations.customer_segment is 'Customer segment matched against leads.customer_segment; ''any'' matches every segment.';
comment on column app_public.agent_specializations.proficiency is 'How good the agent is at it, 1 (learning) to 5 (expert); used by best match.';
comment on column app_public.agent_specializations.languages is 'Languages for this line (empty: the agent''s languages).';
comment on column app_public.agent_specializations.territories is 'Regions (e.g. FL, TX) this specialization is licensed for (empty: everywhere the agent serves).';
comment on column app_public.agent_specializations.created_at is 'When it was added.';
comment on column app_public.agent_specializations.updated_at is 'When it last changed.';

create table app_public.agent_service_areas (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  agent_id uuid not null,
  kind text not null,
  country text not null default 'US',
  region text,
  city text,
  postal_code text,
  center_latitude numeric(10, 8),
  center_longitude numeric(11, 8),
  radius_miles numeric(7, 2),
  created_at timestamptz not null default now(),
  constraint agent_service_areas_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint agent_service_areas_kind_must_be_known check (kind in ('region', 'city', 'postal_code', 'radius')),
  constraint agent_service_areas_need_the_fields_of_their_kind check (
    case kind
      when 'region' then region is not null
      when 'city' then city is not null
      when 'postal_code' then postal_code is not null
      when 'radius' then center_latitude between -90 and 90 and center_longitude between -180 and 180 and radius_miles > 0
    end)
);
create index agent_service_areas_by_agent on app_public.agent_service_areas (tenant_id, agent_id);
comment on table app_public.agent_service_areas is 'Where an agent works: a whole region (state), a city, a postal code, or a radius in miles around a point. An agent without any area serves everywhere.';
comment on column app_public.agent_service_areas.id is 'The row''s id.';
comment on column app_public.agent_service_areas.tenant_id is 'The tenant.';
comment on column app_public.agent_service_areas.agent_id is 'The agent.';
comment on column app_public.agent_service_areas.kind is 'region, city, postal_code or radius.';
comment on column app_public.agent_service_areas.country is 'ISO country code.';
comment on column app_public.agent_service_areas.region is 'State or province code (kind region, or to qualify a city).';
comment on column app_public.agent_service_areas.city is 'City name, matched case-insensitively (kind city).';
comment on column app_public.agent_service_areas.postal_code is 'Postal code (kind postal_code).';
comment on column app_public.agent_service_areas.center_latitude is 'Centre of the circle (kind radius).';
comment on column app_public.agent_service_areas.center_longitude is 'Centre of the circle (kind radius).';
comment on column app_public.agent_service_areas.radius_miles is 'Radius of the circle in miles (kind radius).';
comment on column app_public.agent_service_areas.created_at is 'When it was added.';

create table app_public.agent_availability (
  agent_id uuid not null,
  tenant_id uuid not null default app_public.current_tenant_id(),
  status text not null default 'offline',
  current_load int not null default 0,
  max_capacity int not null default 5,
  status_changed_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint agent_availability_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint agent_availability_must_be_one_row_per_agent primary key (tenant_id, agent_id),
  constraint agent_availability_status_must_be_known check (status in ('available', 'in_call', 'break', 'training', 'offline')),
  constraint agent_availability_load_must_not_be_negative check (current_load >= 0),
  constraint agent_availability_max_capacity_must_be_positive check (max_capacity > 0),
  constraint agent_availability_load_must_not_exceed_capacity check (current_load <= max_capacity)
);
create index agent_availability_routable on app_public.agent_availability (tenant_id, status, current_load);
comment on table app_public.agent_availability is 'An agent''s live state: status (available, in_call, break, training, offline) and how many leads they hold against their capacity. The database refuses a load above capacity.';
comment on column app_public.agent_availability.agent_id is 'The agent.';
comment on column app_public.agent_availability.tenant_id is 'The tenant.';
comment on column app_public.agent_availability.status is 'available, in_call, break, training or offline; only available agents receive leads.';
comment on column app_public.agent_availability.current_load is 'Leads the agent holds now (accepted and not yet closed).';
comment on column app_public.agent_availability.max_capacity is 'The most leads the agent may hold at once.';
comment on column app_public.agent_availability.status_changed_at is 'When the status last changed.';
comment on column app_public.agent_availability.created_at is 'When the row was created.';
comment on column app_public.agent_availability.updated_at is 'When the row last changed.';

create table app_public.availability_slots (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  agent_id uuid not null,
  slot_date date not null,
  start_time time not null default '00:00',
  end_time time not null default '23:59',
  status text not null default 'free',
  locked_until timestamptz,
  locked_by_lead_id uuid,
  booked_lead_id uuid,
  auto_blocked boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint availability_slots_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint availability_slots_locking_lead_must_exist foreign key (tenant_id, locked_by_lead_id)
    references app_public.leads (tenant_id, id) on delete set null (locked_by_lead_id),
  constraint availability_slots_booked_lead_must_exist foreign key (tenant_id, booked_lead_id)
    references app_public.leads (tenant_id, id) on delete set null (booked_lead_id),
  constraint availability_slots_status_must_be_known check (status in ('free', 'booked', 'blocked')),
  constraint availability_slots_must_start_before_they_end check (start_time < end_time),
  -- Both lead references are "on delete set null", so the checks allow a vanished lead: a lock without
  -- its lead simply runs out at locked_until, and a booked slot whose lead was deleted stays booked.
  constraint availability_slots_lock_needs_an_expiry check (locked_by_lead_id is null or locked_until is not null),
  constraint availability_slots_only_booked_slots_name_a_booked_lead check (booked_lead_id is null or status = 'booked'),
  constraint availability_slots_must_not_overlap exclude using gist (
    tenant_id with =, agent_id with =,
    tsrange(slot_date + start_time, slot_date + end_time) with &&)
);
create index availability_slots_by_date on app_public.availability_slots (tenant_id, slot_date, status);
comment on table app_public.availability_slots is $$An agent's calendar (the DJ marketplace's availability): a time range on a date that is free, booked for a lead, or blocked. An offer holds a free slot by setting locked_by_lead_id and locked_until; a lock whose locked_until has passed counts as free without any job running (a cleanup job clears it later). Slots of one agent never overlap; a slot is never held or booked by two leads.$$;
comment on column app_public.availability_slots.id is 'The slot''s id.';
comment on column app_public.availability_slots.tenant_id is 'The tenant.';
comment on column app_public.availability_slots.agent_id is 'The agent.';
comment on column app_public.availability_slots.slot_date is 'The date.';
comment on column app_public.availability_slots.start_time is 'Start of the slot (local time of the agent).';
comment on column app_public.availability_slots.end_time is 'End of the slot.';
comment on column app_public.availability_slots.status is 'free, booked (for booked_lead_id) or blocked (not available).';
comment on column app_public.availability_slots.locked_until is 'While an offer is pending, the slot is held until this time.';
comment on column app_public.availability_slots.locked_by_lead_id is 'The lead whose offer holds the slot.';
comment on column app_public.availability_slots.booked_lead_id is 'The lead the slot is booked for.';
comment on column app_public.availability_slots.auto_blocked is 'True when the system blocked the slot because of a booking (e.g. the rest of the day).';
comment on column app_public.availability_slots.created_at is 'When the slot was created.';
comment on column app_public.availability_slots.updated_at is 'When the slot last changed.';

create table app_public.agent_performance_metrics (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  agent_id uuid not null,
  period text not null,
  period_start date not null,
  leads_assigned int not null default 0,
  leads_converted int not null default 0,
  conversion_rate_hot numeric(5, 4),
  conversion_rate_warm numeric(5, 4),
  conversion_rate_cold numeric(5, 4),
  avg_handling_seconds int,
  satisfaction numeric(3, 2),
  cross_sell_rate numeric(5, 4),
  upsell_rate numeric(5, 4),
  computed_at timestamptz not null default now(),
  constraint agent_performance_metrics_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint agent_performance_metrics_must_be_unique_per_agent_and_period unique (tenant_id, agent_id, period, period_start),
  constraint agent_performance_metrics_period_must_be_known check (period in ('day', 'week', 'month')),
  constraint agent_performance_metrics_rates_must_be_between_0_and_1 check (
    coalesce(conversion_rate_hot, 0) between 0 and 1 and coalesce(conversion_rate_warm, 0) between 0 and 1
    and coalesce(conversion_rate_cold, 0) between 0 and 1 and coalesce(cross_sell_rate, 0) between 0 and 1
    and coalesce(upsell_rate, 0) between 0 and 1),
  constraint agent_performance_metrics_satisfaction_must_be_between_0_and_5 check (satisfaction between 0 and 5)
);
comment on table app_public.agent_performance_metrics is 'Per agent and period (day, week, month): leads assigned and converted, conversion rate by lead tier (hot: score >= 70, warm: 40-69, cold: below 40), average handling time, satisfaction and cross-sell/upsell rates. Refreshed by a scheduled task; feeds best-match and score-tiered routing.';
comment on column app_public.agent_performance_metrics.id is 'The row''s id.';
comment on column app_public.agent_performance_metrics.tenant_id is 'The tenant.';
comment on column app_public.agent_performance_metrics.agent_id is 'The agent.';
comment on column app_public.agent_performance_metrics.period is 'day, week or month.';
comment on column app_public.agent_performance_metrics.period_start is 'First day of the period.';
comment on column app_public.agent_performance_metrics.leads_assigned is 'Leads assigned to the agent in the period.';
comment on column app_public.agent_performance_metrics.leads_converted is 'Of those, leads that were won.';
comment on column app_public.agent_performance_metrics.conversion_rate_hot is 'Conversion rate of hot leads (score >= 70), 0 to 1.';
comment on column app_public.agent_performance_metrics.conversion_rate_warm is 'Conversion rate of warm leads (score 40-69), 0 to 1.';
comment on column app_public.agent_performance_metrics.conversion_rate_cold is 'Conversion rate of cold leads (score below 40), 0 to 1.';
comment on column app_public.agent_performance_metrics.avg_handling_seconds is 'Average time from offer to first contact, in seconds.';
comment on column app_public.agent_performance_metrics.satisfaction is 'Average customer satisfaction, 0 to 5.';
comment on column app_public.agent_performance_metrics.cross_sell_rate is 'Share of won leads with a cross-sell, 0 to 1.';
comment on column app_public.agent_performance_metrics.upsell_rate is 'Share of won leads with an upsell, 0 to 1.';
comment on column app_public.agent_performance_metrics.computed_at is 'When the row was computed.';

create table app_public.agent_routing_credits (
  agent_id uuid primary key,
  tenant_id uuid not null,
  credit numeric not null default 0,
  updated_at timestamptz not null default now(),
  constraint agent_routing_credits_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint agent_routing_credits_must_be_unique_per_agent unique (tenant_id, agent_id)
);
comment on table app_public.agent_routing_credits is 'The weighted round-robin ledger (smooth weighted round robin): each time a lead is routed, every eligible agent earns its routing_weight in credit, the chosen agent pays back the total of the eligible weights. Only eligible agents earn, so an agent coming back from offline or break does not arrive with a burst of saved-up credit; agents joining or leaving do not reset anyone.';
comment on column app_public.agent_routing_credits.agent_id is 'The agent.';
comment on column app_public.agent_routing_credits.tenant_id is 'The tenant.';
comment on column app_public.agent_routing_credits.credit is 'Current credit; the eligible agent with the most credit is chosen next.';
comment on column app_public.agent_routing_credits.updated_at is 'When the credit last changed.';

--------------------------------------------------------------------------------
-- Rules and experiments
--------------------------------------------------------------------------------
create table app_public.routing_rules (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  name text not null,
  priority int not null default 100,
  is_active boolean not null default true,
  conditions jsonb not null default '{}',
  action text not null,
  agent_ids uuid[] not null default '{}',
  queue_type text,
  strategy text,
  strategy_params jsonb not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint routing_rules_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint routing_rules_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint routing_rules_name_must_be_unique_per_tenant unique (tenant_id, name),
  constraint routing_rules_name_must_not_be_blank check (pg_catalog.btrim(name) <> ''),
  constraint routing_rules_action_must_be_known check (action in ('route_to_agent', 'route_to_agents', 'route_to_queue', 'use_strategy')),
  constraint routing_rules_queue_type_must_be_known check (queue_type in ('hot', 'active', 'nurture', 'waiting', 'reassignment')),
  constraint routing_rules_strategy_must_be_known check (strategy in ('weighted_round_robin', 'least_loaded', 'best_match', 'score_tiered', 'direct_to_owner')),
  constraint routing_rules_strategy_params_must_be_an_object check (pg_catalog.jsonb_typeof(strategy_params) = 'object'),
  constraint routing_rules_action_needs_its_target check (
    case action
      when 'route_to_agent' then pg_catalog.cardinality(agent_ids) = 1
      when 'route_to_agents' then pg_catalog.cardinality(agent_ids) >= 1
      when 'route_to_queue' then queue_type is not null
      when 'use_strategy' then strategy is not null
    end)
);
create index routing_rules_active on app_public.routing_rules (tenant_id, priority) where is_active;
comment on table app_public.routing_rules is $$How leads are routed: the active rule with the lowest priority number whose conditions match the lead decides. conditions use the lead filter language of find_leads (e.g. {"status": "hot", "tags_any": ["vip"], "score_min": 70, "region": ["FL"]}); an unknown field or operator is refused when the rule is saved. Actions: route_to_agent / route_to_agents (only these agents are candidates), route_to_queue (queue_type), use_strategy (strategy with strategy_params). Without a matching rule the tenant's default strategy (system_config routing.default_strategy) applies.$$;
comment on column app_public.routing_rules.id is 'The rule''s id.';
comment on column app_public.routing_rules.tenant_id is 'The tenant.';
comment on column app_public.routing_rules.name is 'Name, unique in the tenant.';
comment on column app_public.routing_rules.priority is 'Lower numbers are tried first.';
comment on column app_public.routing_rules.is_active is 'Inactive rules are skipped.';
comment on column app_public.routing_rules.conditions is 'A lead filter (the find_leads language); {} matches every lead.';
comment on column app_public.routing_rules.action is 'route_to_agent, route_to_agents, route_to_queue or use_strategy.';
comment on column app_public.routing_rules.agent_ids is 'The agents for route_to_agent (one) and route_to_agents (several).';
comment on column app_public.routing_rules.queue_type is 'The queue for route_to_queue: hot, active, nurture, waiting or reassignment.';
comment on column app_public.routing_rules.strategy is 'The strategy for use_strategy (or among route_to_agents): weighted_round_robin, least_loaded, best_match, score_tiered, direct_to_owner.';
comment on column app_public.routing_rules.strategy_params is 'Parameters of the strategy (JSON object).';
comment on column app_public.routing_rules.created_at is 'When the rule was created.';
comment on column app_public.routing_rules.updated_at is 'When the rule last changed.';

create table app_public.routing_experiments (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  name text not null,
  description text,
  status text not null default 'draft',
  started_at timestamptz,
  stopped_at timestamptz,
  winner_variant_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint routing_experiments_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint routing_experiments_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint routing_experiments_name_must_be_unique_per_tenant unique (tenant_id, name),
  constraint routing_experiments_name_must_not_be_blank check (pg_catalog.btrim(name) <> ''),
  constraint routing_experiments_status_must_be_known check (status in ('draft', 'running', 'stopped', 'completed'))
);
create unique index routing_experiments_one_running_per_tenant on app_public.routing_experiments (tenant_id) where status = 'running';
comment on table app_public.routing_experiments is 'An A/B test of routing strategies: while running, each new lead is assigned (stickily) to one of its variants by traffic allocation, and that variant''s strategy overrides the rule''s. At most one experiment runs per tenant. Compare the variants with routing_experiment_results.';
comment on column app_public.routing_experiments.id is 'The experiment''s id.';
comment on column app_public.routing_experiments.tenant_id is 'The tenant.';
comment on column app_public.routing_experiments.name is 'Name, unique in the tenant.';
comment on column app_public.routing_experiments.description is 'What is being tested and why.';
comment on column app_public.routing_experiments.status is 'draft, running, stopped or completed (a winner was declared).';
comment on column app_public.routing_experiments.started_at is 'When it started.';
comment on column app_public.routing_experiments.stopped_at is 'When it stopped.';
comment on column app_public.routing_experiments.winner_variant_id is 'The variant declared the winner.';
comment on column app_public.routing_experiments.created_at is 'When it was created.';
comment on column app_public.routing_experiments.updated_at is 'When it last changed.';

create table app_public.routing_experiment_variants (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  experiment_id uuid not null,
  name text not null,
  strategy text not null,
  parameters jsonb not null default '{}',
  traffic_allocation numeric(5, 2) not null,
  is_control boolean not null default false,
  created_at timestamptz not null default now(),
  constraint routing_experiment_variants_experiment_must_exist foreign key (tenant_id, experiment_id)
    references app_public.routing_experiments (tenant_id, id) on delete cascade,
  constraint routing_experiment_variants_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint routing_experiment_variants_name_must_be_unique_per_experiment unique (tenant_id, experiment_id, name),
  constraint routing_experiment_variants_strategy_must_be_known check (strategy in ('weighted_round_robin', 'least_loaded', 'best_match', 'score_tiered', 'direct_to_owner')),
  constraint routing_experiment_variants_allocation_must_be_between_0_and_100 check (traffic_allocation > 0 and traffic_allocation <= 100),
  constraint routing_experiment_variants_parameters_must_be_an_object check (pg_catalog.jsonb_typeof(parameters) = 'object')
);
create unique index routing_experiment_variants_one_control_per_experiment on app_public.routing_experiment_variants (tenant_id, experiment_id) where is_control;
alter table app_public.routing_experiments add constraint routing_experiments_winner_must_be_a_variant
  foreign key (tenant_id, winner_variant_id) references app_public.routing_experiment_variants (tenant_id, id) on delete set null (winner_variant_id);
comment on table app_public.routing_experiment_variants is 'A variant of an experiment: a strategy with parameters and a share of the traffic. The allocations of an experiment must add up to 100 before it can start; one variant is the control.';
comment on column app_public.routing_experiment_variants.id is 'The variant''s id.';
comment on column app_public.routing_experiment_variants.tenant_id is 'The tenant.';
comment on column app_public.routing_experiment_variants.experiment_id is 'The experiment.';
comment on column app_public.routing_experiment_variants.name is 'Name, unique in the experiment.';
comment on column app_public.routing_experiment_variants.strategy is 'The strategy this variant routes with.';
comment on column app_public.routing_experiment_variants.parameters is 'Parameters of the strategy (JSON object).';
comment on column app_public.routing_experiment_variants.traffic_allocation is 'Percentage of the experiment''s leads (0 < x <= 100).';
comment on column app_public.routing_experiment_variants.is_control is 'The baseline the others are compared with.';
comment on column app_public.routing_experiment_variants.created_at is 'When it was created.';

create table app_public.lead_experiment_assignments (
  lead_id uuid primary key,
  tenant_id uuid not null,
  experiment_id uuid not null,
  variant_id uuid not null,
  assigned_at timestamptz not null default now(),
  constraint lead_experiment_assignments_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint lead_experiment_assignments_must_be_unique_per_lead unique (tenant_id, lead_id),
  constraint lead_experiment_assignments_experiment_must_exist foreign key (tenant_id, experiment_id)
    references app_public.routing_experiments (tenant_id, id) on delete cascade,
  constraint lead_experiment_assignments_variant_must_exist foreign key (tenant_id, variant_id)
    references app_public.routing_experiment_variants (tenant_id, id) on delete cascade
);
create index lead_experiment_assignments_by_variant on app_public.lead_experiment_assignments (tenant_id, experiment_id, variant_id);
comment on table app_public.lead_experiment_assignments is 'Which experiment variant a lead was assigned to: one per lead, and sticky (re-routing the lead uses the same variant).';
comment on column app_public.lead_experiment_assignments.lead_id is 'The lead.';
comment on column app_public.lead_experiment_assignments.tenant_id is 'The tenant.';
comment on column app_public.lead_experiment_assignments.experiment_id is 'The experiment.';
comment on column app_public.lead_experiment_assignments.variant_id is 'The variant.';
comment on column app_public.lead_experiment_assignments.assigned_at is 'When.';

--------------------------------------------------------------------------------
-- Offers, queue, history, events
--------------------------------------------------------------------------------
alter table app_public.leads add column owner_agent_id uuid;
alter table app_public.leads add constraint leads_owner_agent_must_exist foreign key (tenant_id, owner_agent_id)
  references app_public.agents (tenant_id, id) on delete set null (owner_agent_id);
create index leads_live_by_owner_agent on app_public.leads (tenant_id, owner_agent_id) where deleted_at is null;
comment on column app_public.leads.owner_agent_id is 'The agent the lead is assigned to (set by routing or reassignment; recorded in lead_assignments).';
alter table app_public.lead_assignments add column from_agent_id uuid, add column to_agent_id uuid;
comment on column app_public.lead_assignments.from_agent_id is 'The previous agent (null if none).';
comment on column app_public.lead_assignments.to_agent_id is 'The new agent (null when unassigned).';

create table app_public.routing_offers (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  lead_id uuid not null,
  agent_id uuid not null,
  slot_id uuid,
  status text not null default 'pending',
  offered_at timestamptz not null default now(),
  expires_at timestamptz not null,
  responded_at timestamptz,
  decline_reason text,
  constraint routing_offers_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint routing_offers_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint routing_offers_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint routing_offers_status_must_be_known check (status in ('pending', 'accepted', 'rejected', 'expired', 'cancelled')),
  constraint routing_offers_must_expire_after_they_are_made check (expires_at > offered_at)
);
create unique index routing_offers_one_pending_per_lead on app_public.routing_offers (tenant_id, lead_id) where status = 'pending';
create index routing_offers_pending_by_expiry on app_public.routing_offers (expires_at) where status = 'pending';
create index routing_offers_by_agent on app_public.routing_offers (tenant_id, agent_id, status);
comment on table app_public.routing_offers is 'A lead offered to an agent, who may accept or reject it before expires_at (default 120 s, system_config routing.offer_timeout_seconds). A lead never has two pending offers. Rejections and timeouts move the lead on to the next candidate; the agents who rejected it are not offered it again.';
comment on column app_public.routing_offers.id is 'The offer''s id.';
comment on column app_public.routing_offers.tenant_id is 'The tenant.';
comment on column app_public.routing_offers.lead_id is 'The lead offered.';
comment on column app_public.routing_offers.agent_id is 'The agent it is offered to.';
comment on column app_public.routing_offers.slot_id is 'The calendar slot held for the lead while the offer is pending (event leads).';
comment on column app_public.routing_offers.status is 'pending, accepted, rejected, expired or cancelled.';
comment on column app_public.routing_offers.offered_at is 'When the offer was made.';
comment on column app_public.routing_offers.expires_at is 'When the offer times out.';
comment on column app_public.routing_offers.responded_at is 'When the agent accepted or rejected it.';
comment on column app_public.routing_offers.decline_reason is 'Why the agent rejected it, if they said.';

create table app_public.assignment_queue (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  lead_id uuid not null,
  queue_type text not null,
  priority int not null default 0,
  lead_score int not null default 0,
  enqueued_at timestamptz not null default now(),
  sla_expires_at timestamptz not null,
  escalated_at timestamptz,
  dequeued_at timestamptz,
  dequeue_reason text,
  constraint assignment_queue_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint assignment_queue_type_must_be_known check (queue_type in ('hot', 'active', 'nurture', 'waiting', 'reassignment')),
  constraint assignment_queue_dequeue_needs_a_reason check ((dequeued_at is null) = (dequeue_reason is null))
);
create unique index assignment_queue_one_waiting_entry_per_lead on app_public.assignment_queue (tenant_id, lead_id) where dequeued_at is null;
create index assignment_queue_waiting on app_public.assignment_queue (tenant_id, priority desc, enqueued_at) where dequeued_at is null;
create index assignment_queue_sla on app_public.assignment_queue (sla_expires_at) where dequeued_at is null and escalated_at is null;
comment on table app_public.assignment_queue is 'Leads waiting for an agent: when no candidate is free the lead waits in a queue (hot, active, nurture, waiting, reassignment) with an SLA expiry. When an agent becomes available, waiting leads are re-routed by priority and age; an expired SLA escalates the lead to the reassignment queue with a wider candidate set. A lead waits in at most one queue at a time.';
comment on column app_public.assignment_queue.id is 'The entry''s id.';
comment on column app_public.assignment_queue.tenant_id is 'The tenant.';
comment on column app_public.assignment_queue.lead_id is 'The waiting lead.';
comment on column app_public.assignment_queue.queue_type is 'hot, active, nurture, waiting or reassignment.';
comment on column app_public.assignment_queue.priority is 'Higher is served first (hot leads and escalations rank higher).';
comment on column app_public.assignment_queue.lead_score is 'The lead''s score when queued.';
comment on column app_public.assignment_queue.enqueued_at is 'When the lead entered the queue (its position: priority, then age).';
comment on column app_public.assignment_queue.sla_expires_at is 'When the lead must have an agent; after that it is escalated.';
comment on column app_public.assignment_queue.escalated_at is 'When the SLA expired and the lead was escalated.';
comment on column app_public.assignment_queue.dequeued_at is 'When the lead left the queue.';
comment on column app_public.assignment_queue.dequeue_reason is 'Why it left: routed, escalated, cancelled, lead_closed.';

create table app_public.lead_routing_history (
  id bigint generated always as identity primary key,
  tenant_id uuid not null,
  lead_id uuid not null,
  routed_at timestamptz not null default clock_timestamp(),
  trigger text not null,
  strategy text,
  rule_id uuid,
  experiment_id uuid,
  variant_id uuid,
  lead_score int,
  candidates jsonb not null default '[]',
  chosen_agent_id uuid,
  outcome text not null,
  reason text,
  constraint lead_routing_history_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint lead_routing_history_trigger_must_be_known check (trigger in ('new_lead', 'manual', 'offer_rejected', 'offer_expired', 'agent_available', 'escalation', 'requeue')),
  constraint lead_routing_history_outcome_must_be_known check (outcome in ('offered', 'assigned', 'queued', 'not_routed')),
  constraint lead_routing_history_candidates_must_be_an_array check (pg_catalog.jsonb_typeof(candidates) = 'array')
);
create index lead_routing_history_by_lead on app_public.lead_routing_history (tenant_id, lead_id, routed_at);
comment on table app_public.lead_routing_history is $$Every routing decision, explained: the candidate set with, for each agent, which checks passed or failed (skill, language, area, availability, capacity, slot, previous rejection) and its score; the strategy, rule and experiment variant used; the agent chosen and the outcome (offered, assigned, queued, not_routed with the reason, e.g. the number is on the DNC list). See explain_routing.$$;
comment on column app_public.lead_routing_history.id is 'Sequence number.';
comment on column app_public.lead_routing_history.tenant_id is 'The tenant.';
comment on column app_public.lead_routing_history.lead_id is 'The lead.';
comment on column app_public.lead_routing_history.routed_at is 'When the decision was made.';
comment on column app_public.lead_routing_history.trigger is 'What caused it: new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue.';
comment on column app_public.lead_routing_history.strategy is 'The strategy used.';
comment on column app_public.lead_routing_history.rule_id is 'The rule that matched, if any.';
comment on column app_public.lead_routing_history.experiment_id is 'The experiment the lead is in, if any.';
comment on column app_public.lead_routing_history.variant_id is 'The experiment variant whose strategy was used, if any.';
comment on column app_public.lead_routing_history.lead_score is 'The lead''s score at the time.';
comment on column app_public.lead_routing_history.candidates is 'JSON array, one object per agent considered: {agent_id, name, checks: {skill, language, area, availability, capacity, slot, not_rejected}, eligible, score}.';
comment on column app_public.lead_routing_history.chosen_agent_id is 'The agent chosen, if any.';
comment on column app_public.lead_routing_history.outcome is 'offered, assigned, queued or not_routed.';
comment on column app_public.lead_routing_history.reason is 'The reason, in words.';

create table app_public.routing_events (
  id bigint generated always as identity primary key,
  tenant_id uuid not null,
  lead_id uuid,
  agent_id uuid,
  offer_id uuid,
  event_type text not null,
  data jsonb not null default '{}',
  occurred_at timestamptz not null default clock_timestamp(),
  constraint routing_events_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint routing_events_event_type_must_be_known check (event_type in (
    'offered', 'accepted', 'rejected', 'expired', 'cancelled', 'assigned', 'queued', 'dequeued', 'escalated', 'not_routed',
    'lock_expired', 'agent_status_changed'))
);
create index routing_events_by_lead on app_public.routing_events (tenant_id, lead_id, occurred_at);
create index routing_events_by_type on app_public.routing_events (tenant_id, event_type, occurred_at);
comment on table app_public.routing_events is 'What happened during routing, in order: offers made, accepted, rejected, expired or cancelled, assignments, queueing and dequeueing, escalations, leads not routed, expired slot locks and agent status changes.';
comment on column app_public.routing_events.id is 'Sequence number.';
comment on column app_public.routing_events.tenant_id is 'The tenant.';
comment on column app_public.routing_events.lead_id is 'The lead, if the event concerns one.';
comment on column app_public.routing_events.agent_id is 'The agent, if the event concerns one.';
comment on column app_public.routing_events.offer_id is 'The offer, if the event concerns one.';
comment on column app_public.routing_events.event_type is 'offered, accepted, rejected, expired, cancelled, assigned, queued, dequeued, escalated, not_routed, lock_expired or agent_status_changed.';
comment on column app_public.routing_events.data is 'Details (JSON object).';
comment on column app_public.routing_events.occurred_at is 'When it happened.';

--------------------------------------------------------------------------------
-- DJ marketplace: tracking numbers and city event statistics
--------------------------------------------------------------------------------
create table app_public.tracking_numbers (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  agent_id uuid not null,
  phone app_public.e164_phone not null,
  provider_sid text,
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  constraint tracking_numbers_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint tracking_numbers_phone_must_be_unique_per_tenant unique (tenant_id, phone)
);
create index tracking_numbers_by_agent on app_public.tracking_numbers (tenant_id, agent_id);
comment on table app_public.tracking_numbers is 'A virtual phone number that belongs to one agent (the DJ marketplace''s tracking numbers): calls and texts to it are attributed to that agent and the caller''s lead.';
comment on column app_public.tracking_numbers.id is 'The row''s id.';
comment on column app_public.tracking_numbers.tenant_id is 'The tenant.';
comment on column app_public.tracking_numbers.agent_id is 'The agent the number belongs to.';
comment on column app_public.tracking_numbers.phone is 'The number (E.164).';
comment on column app_public.tracking_numbers.provider_sid is 'The provider''s id of the number (e.g. Twilio PN…).';
comment on column app_public.tracking_numbers.is_active is 'Inactive numbers are no longer attributed.';
comment on column app_public.tracking_numbers.created_at is 'When the number was assigned.';

create table app_public.city_event_stats (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  city text not null,
  region text,
  event_type text not null,
  period_start date not null,
  leads int not null default 0,
  booked int not null default 0,
  avg_estimated_value numeric(12, 2),
  computed_at timestamptz not null default now(),
  constraint city_event_stats_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint city_event_stats_must_be_unique_per_city_event_and_month unique nulls not distinct (tenant_id, city, region, event_type, period_start)
);
comment on table app_public.city_event_stats is 'Demand per city, event type and month (the DJ marketplace''s city_event_stats): leads, bookings and average value. Refreshed by a scheduled task.';
comment on column app_public.city_event_stats.id is 'The row''s id.';
comment on column app_public.city_event_stats.tenant_id is 'The tenant.';
comment on column app_public.city_event_stats.city is 'City.';
comment on column app_public.city_event_stats.region is 'State or region.';
comment on column app_public.city_event_stats.event_type is 'Kind of event (e.g. wedding).';
comment on column app_public.city_event_stats.period_start is 'First day of the month.';
comment on column app_public.city_event_stats.leads is 'Leads in the month.';
comment on column app_public.city_event_stats.booked is 'Of those, leads that were booked (won).';
comment on column app_public.city_event_stats.avg_estimated_value is 'Average estimated value of those leads.';
comment on column app_public.city_event_stats.computed_at is 'When the row was computed.';

--------------------------------------------------------------------------------
-- Row-level security and grants. Members of the tenant read everything here; managers and up
-- configure agents, rules and experiments (a trigger gives others a clear 42501); an agent may
-- change their own status and calendar; routing state (offers, queue, history, events, credits,
-- metrics) is written only by the routing functions.
--------------------------------------------------------------------------------

-- agents
alter table app_public.agents enable row level security;
alter table app_public.agents force row level security;
create policy owner_all on app_public.agents for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.agents for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.agents for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.agents for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.agents for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create trigger _050_require_tenant_role before insert or update or delete on app_public.agents
  for each row execute function app_private.tg__require_tenant_role('manager', 'agents');
create trigger _100_timestamps before insert or update on app_public.agents for each row execute function app_private.tg__timestamps();
grant select, delete on app_public.agents to :DATABASE_VISITOR;
grant insert (tenant_id, user_id, display_name, email, phone, kind, external_source, external_id, languages, routing_weight, is_active, timezone) on app_public.agents to :DATABASE_VISITOR;
grant update (user_id, display_name, email, phone, kind, external_source, external_id, languages, routing_weight, is_active, timezone) on app_public.agents to :DATABASE_VISITOR;

-- agent_specializations
alter table app_public.agent_specializations enable row level security;
alter table app_public.agent_specializations force row level security;
create policy owner_all on app_public.agent_specializations for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.agent_specializations for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.agent_specializations for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.agent_specializations for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.agent_specializations for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create trigger _050_require_tenant_role before insert or update or delete on app_public.agent_specializations
  for each row execute function app_private.tg__require_tenant_role('manager', 'agent specializations');
create trigger _100_timestamps before insert or update on app_public.agent_specializations for each row execute function app_private.tg__timestamps();
grant select, delete on app_public.agent_specializations to :DATABASE_VISITOR;
grant insert (tenant_id, agent_id, service_line, customer_segment, proficiency, languages, territories) on app_public.agent_specializations to :DATABASE_VISITOR;
grant update (service_line, customer_segment, proficiency, languages, territories) on app_public.agent_specializations to :DATABASE_VISITOR;

-- agent_service_areas
alter table app_public.agent_service_areas enable row level security;
alter table app_public.agent_service_areas force row level security;
create policy owner_all on app_public.agent_service_areas for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.agent_service_areas for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.agent_service_areas for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.agent_service_areas for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.agent_service_areas for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create trigger _050_require_tenant_role before insert or update or delete on app_public.agent_service_areas
  for each row execute function app_private.tg__require_tenant_role('manager', 'agent service areas');
grant select, delete on app_public.agent_service_areas to :DATABASE_VISITOR;
grant insert (tenant_id, agent_id, kind, country, region, city, postal_code, center_latitude, center_longitude, radius_miles) on app_public.agent_service_areas to :DATABASE_VISITOR;
grant update (kind, country, region, city, postal_code, center_latitude, center_longitude, radius_miles) on app_public.agent_service_areas to :DATABASE_VISITOR;

-- agent_availability: the agent sets their own status; managers also set capacity; load is routing's.
create function app_private.tg_agent_availability__check_actor() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_trusted boolean;
begin
  select r.rolsuper or c.relowner = r.oid into v_trusted
    from pg_catalog.pg_class c, pg_catalog.pg_roles r where c.oid = TG_RELID and r.rolname = current_user;
  if coalesce(v_trusted, false) or app_hidden.current_user_has_role('manager') then
    return NEW;
  end if;
  if TG_OP = 'UPDATE' and NEW.max_capacity = OLD.max_capacity and exists (
       select 1 from app_public.agents a
        where a.tenant_id = NEW.tenant_id and a.id = NEW.agent_id and a.user_id = app_public.current_user_id()) then
    return NEW;
  end if;
  raise exception 'Only the agent themself (their status) or owners, admins and managers can change agent availability'
    using errcode = '42501';
end;
$$;
comment on function app_private.tg_agent_availability__check_actor() is 'Trigger: an agent may change their own status; owners, admins and managers may change any availability (including capacity); anyone else gets 42501.';
alter table app_public.agent_availability enable row level security;
alter table app_public.agent_availability force row level security;
create policy owner_all on app_public.agent_availability for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.agent_availability for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.agent_availability for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.agent_availability for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create trigger _050_check_actor before insert or update on app_public.agent_availability
  for each row execute function app_private.tg_agent_availability__check_actor();
create trigger _100_timestamps before insert or update on app_public.agent_availability for each row execute function app_private.tg__timestamps();
grant select on app_public.agent_availability to :DATABASE_VISITOR;
grant insert (tenant_id, agent_id, status, max_capacity) on app_public.agent_availability to :DATABASE_VISITOR;
grant update (status, max_capacity) on app_public.agent_availability to :DATABASE_VISITOR;

-- availability_slots: managers, or the agent for their own calendar; locks and bookings are routing's.
create function app_private.tg_availability_slots__check_actor() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row app_public.availability_slots := case when TG_OP = 'DELETE' then OLD else NEW end;
  v_trusted boolean;
begin
  select r.rolsuper or c.relowner = r.oid into v_trusted
    from pg_catalog.pg_class c, pg_catalog.pg_roles r where c.oid = TG_RELID and r.rolname = current_user;
  if not coalesce(v_trusted, false) and not app_hidden.current_user_has_role('manager') and not exists (
       select 1 from app_public.agents a
        where a.tenant_id = v_row.tenant_id and a.id = v_row.agent_id and a.user_id = app_public.current_user_id()) then
    raise exception 'Only the agent themself or owners, admins and managers can change an agent''s calendar'
      using errcode = '42501';
  end if;
  if TG_OP = 'DELETE' then
    return OLD;
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_availability_slots__check_actor() is 'Trigger: an agent may manage their own calendar slots; owners, admins and managers may manage any; anyone else gets 42501.';
alter table app_public.availability_slots enable row level security;
alter table app_public.availability_slots force row level security;
create policy owner_all on app_public.availability_slots for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.availability_slots for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.availability_slots for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.availability_slots for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.availability_slots for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()) and status = 'free');
create trigger _050_check_actor before insert or update or delete on app_public.availability_slots
  for each row execute function app_private.tg_availability_slots__check_actor();
create trigger _100_timestamps before insert or update on app_public.availability_slots for each row execute function app_private.tg__timestamps();
grant select, delete on app_public.availability_slots to :DATABASE_VISITOR;
grant insert (tenant_id, agent_id, slot_date, start_time, end_time, status) on app_public.availability_slots to :DATABASE_VISITOR;
grant update (slot_date, start_time, end_time, status) on app_public.availability_slots to :DATABASE_VISITOR;

-- tracking_numbers
alter table app_public.tracking_numbers enable row level security;
alter table app_public.tracking_numbers force row level security;
create policy owner_all on app_public.tracking_numbers for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.tracking_numbers for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.tracking_numbers for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.tracking_numbers for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create trigger _050_require_tenant_role before insert or update on app_public.tracking_numbers
  for each row execute function app_private.tg__require_tenant_role('manager', 'tracking numbers');
grant select on app_public.tracking_numbers to :DATABASE_VISITOR;
grant insert (tenant_id, agent_id, phone, provider_sid, is_active) on app_public.tracking_numbers to :DATABASE_VISITOR;
grant update (agent_id, is_active) on app_public.tracking_numbers to :DATABASE_VISITOR;

-- routing_rules, routing_experiments, routing_experiment_variants: managers and up.
alter table app_public.routing_rules enable row level security;
alter table app_public.routing_rules force row level security;
create policy owner_all on app_public.routing_rules for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.routing_rules for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.routing_rules for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.routing_rules for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.routing_rules for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create trigger _050_require_tenant_role before insert or update or delete on app_public.routing_rules
  for each row execute function app_private.tg__require_tenant_role('manager', 'routing rules');
create trigger _100_timestamps before insert or update on app_public.routing_rules for each row execute function app_private.tg__timestamps();
grant select, delete on app_public.routing_rules to :DATABASE_VISITOR;
grant insert (tenant_id, name, priority, is_active, conditions, action, agent_ids, queue_type, strategy, strategy_params) on app_public.routing_rules to :DATABASE_VISITOR;
grant update (name, priority, is_active, conditions, action, agent_ids, queue_type, strategy, strategy_params) on app_public.routing_rules to :DATABASE_VISITOR;

alter table app_public.routing_experiments enable row level security;
alter table app_public.routing_experiments force row level security;
create policy owner_all on app_public.routing_experiments for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.routing_experiments for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.routing_experiments for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.routing_experiments for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create trigger _050_require_tenant_role before insert or update on app_public.routing_experiments
  for each row execute function app_private.tg__require_tenant_role('manager', 'routing experiments');
create trigger _100_timestamps before insert or update on app_public.routing_experiments for each row execute function app_private.tg__timestamps();
grant select on app_public.routing_experiments to :DATABASE_VISITOR;
grant insert (tenant_id, name, description) on app_public.routing_experiments to :DATABASE_VISITOR;
grant update (name, description) on app_public.routing_experiments to :DATABASE_VISITOR;
-- status, started_at, stopped_at and winner_variant_id change through start/stop/declare-winner functions.

alter table app_public.routing_experiment_variants enable row level security;
alter table app_public.routing_experiment_variants force row level security;
create policy owner_all on app_public.routing_experiment_variants for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.routing_experiment_variants for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.routing_experiment_variants for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.routing_experiment_variants for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.routing_experiment_variants for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create trigger _050_require_tenant_role before insert or update or delete on app_public.routing_experiment_variants
  for each row execute function app_private.tg__require_tenant_role('manager', 'routing experiment variants');
grant select, delete on app_public.routing_experiment_variants to :DATABASE_VISITOR;
grant insert (tenant_id, experiment_id, name, strategy, parameters, traffic_allocation, is_control) on app_public.routing_experiment_variants to :DATABASE_VISITOR;
grant update (name, strategy, parameters, traffic_allocation, is_control) on app_public.routing_experiment_variants to :DATABASE_VISITOR;

-- Routing state: read-only for members, written by the routing functions (owner).
alter table app_public.agent_performance_metrics enable row level security;
alter table app_public.agent_performance_metrics force row level security;
create policy owner_all on app_public.agent_performance_metrics for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.agent_performance_metrics for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.agent_performance_metrics to :DATABASE_VISITOR;

alter table app_public.agent_routing_credits enable row level security;
alter table app_public.agent_routing_credits force row level security;
create policy owner_all on app_public.agent_routing_credits for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.agent_routing_credits for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.agent_routing_credits to :DATABASE_VISITOR;

alter table app_public.lead_experiment_assignments enable row level security;
alter table app_public.lead_experiment_assignments force row level security;
create policy owner_all on app_public.lead_experiment_assignments for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.lead_experiment_assignments for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.lead_experiment_assignments to :DATABASE_VISITOR;

alter table app_public.routing_offers enable row level security;
alter table app_public.routing_offers force row level security;
create policy owner_all on app_public.routing_offers for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.routing_offers for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.routing_offers to :DATABASE_VISITOR;

alter table app_public.assignment_queue enable row level security;
alter table app_public.assignment_queue force row level security;
create policy owner_all on app_public.assignment_queue for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.assignment_queue for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.assignment_queue to :DATABASE_VISITOR;

alter table app_public.lead_routing_history enable row level security;
alter table app_public.lead_routing_history force row level security;
create policy owner_all on app_public.lead_routing_history for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.lead_routing_history for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.lead_routing_history to :DATABASE_VISITOR;

alter table app_public.routing_events enable row level security;
alter table app_public.routing_events force row level security;
create policy owner_all on app_public.routing_events for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.routing_events for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.routing_events to :DATABASE_VISITOR;

alter table app_public.city_event_stats enable row level security;
alter table app_public.city_event_stats force row level security;
create policy owner_all on app_public.city_event_stats for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.city_event_stats for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.city_event_stats to :DATABASE_VISITOR;

--! split: 020-route-lead.sql
--------------------------------------------------------------------------------
-- Routing engine core: which agents can take a lead (candidate checks), which one gets it
-- (strategies, rules, experiment override), and the decision itself (offer, direct assignment,
-- queue or not routed), recorded in lead_routing_history and explained by explain_routing.
--
-- Lock order (every routing function must follow it, or deadlocks follow):
--   1. the lead row (FOR NO KEY UPDATE)            -- serialises routing of one lead
--   2. agent_availability rows, one at a time      -- the chosen agent's capacity
--   3. availability_slots rows                     -- the event date's slot
--   4. agent_routing_credits rows, by agent_id     -- the weighted round-robin ledger, always last
--
-- Load rule (shared with 030-offers-queue.sql): a PENDING OFFER RESERVES CAPACITY. Making an
-- offer adds 1 to agent_availability.current_load; accepting keeps it; rejecting, expiring or
-- cancelling gives it back (load - 1). Direct assignment adds 1 too.
--
-- Idempotent: drops what it creates. 010 recreates its tables on every run (which drops the
-- functions returning their row types), so everything here is dropped and created again.
--------------------------------------------------------------------------------

drop function if exists app_public.explain_routing(uuid);
drop type if exists app_public.routing_explanation cascade;
drop function if exists app_public.route_lead(uuid);
drop function if exists app_private.route_lead(uuid, uuid, text);
drop function if exists app_private.matching_routing_rule(uuid, uuid);
drop function if exists app_private.routing_setting(uuid, text);
drop function if exists app_hidden.language_matches(text, text[]);
drop function if exists app_hidden.distance_miles(numeric, numeric, numeric, numeric);

--------------------------------------------------------------------------------
-- Small helpers
--------------------------------------------------------------------------------

create function app_hidden.language_matches(lead_language text, languages text[]) returns boolean
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select lead_language is not null and exists (
    select 1 from pg_catalog.unnest(languages) l
     where pg_catalog.lower(l) = pg_catalog.lower(lead_language)
        or pg_catalog.lower(lead_language) like pg_catalog.lower(l) || '-%'
        or pg_catalog.lower(l) like pg_catalog.lower(lead_language) || '-%');
$$;
comment on function app_hidden.language_matches(text, text[]) is 'True when the lead''s language tag matches one of the languages: the same tag (case-insensitive), or one is a more specific form of the other (en-US matches en, and en matches en-US).';
grant execute on function app_hidden.language_matches(text, text[]) to :DATABASE_VISITOR;

create function app_hidden.distance_miles(lat1 numeric, lon1 numeric, lat2 numeric, lon2 numeric) returns numeric
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select (3958.8 * 2 * pg_catalog.asin(least(1::float8, pg_catalog.sqrt(
      pg_catalog.power(pg_catalog.sin(pg_catalog.radians((lat2 - lat1)::float8) / 2), 2)
      + pg_catalog.cos(pg_catalog.radians(lat1::float8)) * pg_catalog.cos(pg_catalog.radians(lat2::float8))
        * pg_catalog.power(pg_catalog.sin(pg_catalog.radians((lon2 - lon1)::float8) / 2), 2)))))::numeric;
$$;
comment on function app_hidden.distance_miles(numeric, numeric, numeric, numeric) is 'Great-circle (haversine) distance in miles between two points given in degrees; null when any coordinate is null.';
grant execute on function app_hidden.distance_miles(numeric, numeric, numeric, numeric) to :DATABASE_VISITOR;

create function app_private.routing_setting(tenant_id uuid, key text) returns jsonb
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select c.value from app_public.system_config c where c.tenant_id = routing_setting.tenant_id and c.key = routing_setting.key;
$$;
comment on function app_private.routing_setting(uuid, text) is 'The tenant''s system_config value for key (JSON), or null when it is not set (callers apply their default).';

--------------------------------------------------------------------------------
-- Rules
--------------------------------------------------------------------------------

create function app_private.matching_routing_rule(tenant_id uuid, lead_id uuid) returns app_public.routing_rules
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_public.routing_rules;
  f app_hidden.lead_filter;
  v_match boolean;
begin
  for r in
    select * from app_public.routing_rules rr
     where rr.tenant_id = matching_routing_rule.tenant_id and rr.is_active
     order by rr.priority, rr.created_at, rr.id
  loop
    if r.conditions = '{}'::jsonb then
      return r;
    end if;
    begin
      f := app_hidden.parse_lead_filter(r.conditions);
    exception when invalid_parameter_value then
      -- A malformed rule (saved before validation existed) never matches; it is reported, not fatal.
      raise warning 'Routing rule % (%) has invalid conditions and is skipped: %', r.name, r.id, sqlerrm;
      continue;
    end;
    execute pg_catalog.format('select exists (select 1 from app_public.leads l where %s and l.id = $17)',
        app_hidden.lead_filter_where(f))
      into v_match
      using matching_routing_rule.tenant_id, f.status, f.status_not, f.tags_any, f.tags_all, f.score_min, f.score_max, f.source,
        pg_catalog.now() - pg_catalog.make_interval(days => f.created_within_days),
        case when f.created_from is not null then app_hidden.tenant_day_start(matching_routing_rule.tenant_id, f.created_from) end,
        case when f.created_to is not null then app_hidden.tenant_day_start(matching_routing_rule.tenant_id, f.created_to + 1) end,
        f.city, f.region, f.owner_user_id,
        '%' || app_hidden.like_escape(f.text) || '%',
        '%' || app_hidden.phone_search_digits(f.text) || '%',
        matching_routing_rule.lead_id;
    if v_match then
      return r;
    end if;
  end loop;
  return null;
end;
$$;
comment on function app_private.matching_routing_rule(uuid, uuid) is 'The first active routing rule of the tenant (lowest priority number, then oldest) whose conditions (the lead filter language of find_leads, compiled with bound parameters) match the lead; null when none does. A rule whose conditions no longer parse is skipped with a warning.';

--------------------------------------------------------------------------------
-- Assignment history: owner_agent_id changes are recorded too
--------------------------------------------------------------------------------

create or replace function app_private.tg_leads__assignment_history() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user_id uuid;
  v_strategy text;
  v_reason text := nullif(pg_catalog.btrim(pg_catalog.current_setting('app.assignment_reason', true)), '');
  v_from uuid;
  v_from_agent uuid;
begin
  if TG_OP = 'INSERT' then
    if NEW.owner_user_id is null and NEW.owner_agent_id is null then
      return null;
    end if;
  else
    if OLD.owner_user_id is not distinct from NEW.owner_user_id and OLD.owner_agent_id is not distinct from NEW.owner_agent_id then
      return null;
    end if;
    v_from := OLD.owner_user_id;
    v_from_agent := OLD.owner_agent_id;
  end if;
  v_user_id := app_public.current_user_id();
  v_strategy := app_private.assignment_strategy(v_user_id, app_public.current_api_key_id());
  -- The owner left the tenant (leads_owner_must_be_a_member sets the owner to null).
  if NEW.owner_user_id is null and v_from is not null and not exists (
    select 1 from app_public.memberships m where m.tenant_id = NEW.tenant_id and m.user_id = v_from
  ) then
    v_strategy := 'system';
    v_reason := coalesce(v_reason, 'The previous owner is no longer a member of this tenant');
  -- The agent was removed (leads_owner_agent_must_exist sets the agent to null).
  elsif NEW.owner_agent_id is null and v_from_agent is not null and not exists (
    select 1 from app_public.agents a where a.tenant_id = NEW.tenant_id and a.id = v_from_agent
  ) then
    v_strategy := 'system';
    v_reason := coalesce(v_reason, 'The previous agent was removed from this tenant');
  end if;
  insert into app_public.lead_assignments (tenant_id, lead_id, from_user_id, to_user_id, from_agent_id, to_agent_id,
    strategy, reason, assigned_by_user_id, assigned_at)
  values (NEW.tenant_id, NEW.id, v_from, NEW.owner_user_id, v_from_agent, NEW.owner_agent_id,
    v_strategy, v_reason, v_user_id, pg_catalog.clock_timestamp());
  return null;
end;
$$;
comment on function app_private.tg_leads__assignment_history() is 'Trigger (_530_assignment_history, after insert or update on leads): records every change of the owner (owner_user_id) or the owner agent (owner_agent_id) in lead_assignments as one row (from/to user and from/to agent), with the strategy (setting app.assignment_strategy, default manual for users and API keys, system otherwise), the reason (setting app.assignment_reason) and the acting user. An owner who left the tenant, or an agent who was removed, is recorded as strategy system.';

-- No column list on purpose: a trigger "update of owner_agent_id" would depend on that column and
-- stop 010 (which drops and re-adds the column on every run) from running again.
drop trigger if exists _530_assignment_history on app_public.leads;
create trigger _530_assignment_history after insert or update on app_public.leads
  for each row execute function app_private.tg_leads__assignment_history();

--------------------------------------------------------------------------------
-- route_lead
--------------------------------------------------------------------------------

create function app_private.route_lead(tenant_id uuid, lead_id uuid, trigger text) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := route_lead.tenant_id;
  v_trigger text := route_lead.trigger;
  v_lead app_public.leads;
  v_rule app_public.routing_rules;
  v_strategy text;
  v_order_strategy text;
  v_params jsonb := '{}';
  v_experiment_id uuid;
  v_variant_id uuid;
  v_variant_strategy text;
  v_variant_params jsonb;
  v_restrict uuid[];
  v_tier text;
  v_tier_weight numeric;
  v_hot_threshold int;
  v_lat numeric;
  v_lon numeric;
  v_prev_owner uuid;
  v_candidates jsonb := '[]';
  v_order uuid[];
  v_eligible uuid[];
  v_skipped uuid[] := '{}';
  v_agent uuid;
  v_av app_public.agent_availability;
  v_slot uuid;
  v_chosen uuid;
  v_chosen_slot uuid;
  v_notes jsonb := '{}';
  v_wrr_used boolean := false;
  v_total_weight numeric;
  v_outcome text;
  v_reason text;
  v_queue_type text;
  v_history_id bigint;
  v_offer_id uuid;
  v_expires timestamptz;
  v_timeout numeric;
  v_direct boolean;
  v_sla numeric;
  v_agent_name text;
  v_agent_user uuid;
  v_assign_strategy text;
  v_prev_setting_strategy text;
  v_prev_setting_reason text;
  v_prev_setting_source text;
  v_failed text;
  v_setting jsonb;
begin
  if v_trigger is null or v_trigger not in ('new_lead', 'manual', 'offer_rejected', 'offer_expired', 'agent_available', 'escalation', 'requeue') then
    raise exception 'Invalid routing trigger ''%'': use new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue', v_trigger
      using errcode = '22023';
  end if;

  -- 1. The lead, locked: one routing decision per lead at a time.
  select l.* into v_lead from app_public.leads l
   where l.tenant_id = v_tenant and l.id = route_lead.lead_id
   for no key update;
  if not found then
    raise exception 'Lead not found' using errcode = 'P0002';
  end if;

  -- 2. Leads that must not be routed.
  if v_lead.deleted_at is not null then
    v_reason := 'The lead is deleted';
  elsif v_lead.status = 'dnc' or (v_lead.phone is not null and app_public.is_on_dnc_list(v_lead.phone, v_tenant)) then
    v_reason := pg_catalog.format('The lead''s number %s is on the do-not-contact list', coalesce(v_lead.phone::text, '(none)'));
  elsif exists (select 1 from app_public.lead_statuses s where s.status = v_lead.status and s.is_final) then
    v_reason := pg_catalog.format('The lead is closed (status %s)', v_lead.status);
  end if;
  if v_reason is not null then
    update app_public.assignment_queue q set dequeued_at = pg_catalog.now(), dequeue_reason = 'lead_closed'
     where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null;
  elsif v_lead.owner_agent_id is not null then
    v_reason := pg_catalog.format('The lead is already assigned to agent %s',
      coalesce((select a.display_name from app_public.agents a where a.tenant_id = v_tenant and a.id = v_lead.owner_agent_id), v_lead.owner_agent_id::text));
  else
    select pg_catalog.format('The lead already has a pending offer (offer %s to %s)', o.id, a.display_name) into v_reason
      from app_public.routing_offers o join app_public.agents a on a.tenant_id = o.tenant_id and a.id = o.agent_id
     where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.status = 'pending';
  end if;
  if v_reason is not null then
    insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, lead_score, outcome, reason)
    values (v_tenant, v_lead.id, v_trigger, v_lead.lead_score, 'not_routed', v_reason)
    returning id into v_history_id;
    insert into app_public.routing_events (tenant_id, lead_id, event_type, data)
    values (v_tenant, v_lead.id, 'not_routed', pg_catalog.jsonb_build_object('reason', v_reason, 'history_id', v_history_id));
    return v_history_id;
  end if;

  -- 3. Rule, strategy, experiment variant.
  v_rule := app_private.matching_routing_rule(v_tenant, v_lead.id);
  if v_rule.id is not null then
    v_strategy := v_rule.strategy;
    v_params := v_rule.strategy_params;
    -- An escalation widens the candidate set: the rule's agent list no longer limits it.
    if v_rule.action in ('route_to_agent', 'route_to_agents') and v_trigger <> 'escalation' then
      v_restrict := v_rule.agent_ids;
    end if;
  end if;
  if v_strategy is null then
    v_setting := app_private.routing_setting(v_tenant, 'routing.default_strategy');
    v_strategy := case when v_setting #>> '{}' in ('weighted_round_robin', 'least_loaded', 'best_match', 'score_tiered', 'direct_to_owner')
      then v_setting #>> '{}' else 'weighted_round_robin' end;
  end if;
  if pg_catalog.to_regprocedure('app_private.experiment_variant_for_lead(uuid,uuid)') is not null then
    execute 'select c.experiment_id, c.variant_id, c.strategy, c.parameters from app_private.experiment_variant_for_lead($1, $2) c'
      into v_experiment_id, v_variant_id, v_variant_strategy, v_variant_params
      using v_tenant, v_lead.id;
    if v_variant_id is not null and v_variant_strategy is not null then
      v_strategy := v_variant_strategy;
      v_params := coalesce(v_variant_params, '{}');
    end if;
  end if;

  if v_rule.action = 'route_to_queue' and v_trigger <> 'escalation' then
    v_strategy := null;
    v_queue_type := v_rule.queue_type;
    v_reason := pg_catalog.format('Rule "%s" sends the lead to the %s queue', v_rule.name, v_rule.queue_type);
  else
    -- 4. Candidates and their checks, ordered by the strategy.
    v_hot_threshold := coalesce(case when v_params ->> 'hot_threshold' ~ '^\d{1,3}$' then (v_params ->> 'hot_threshold')::int end, 70);
    v_tier := case when v_lead.lead_score >= v_hot_threshold then 'hot' when v_lead.lead_score >= 40 then 'warm' else 'cold' end;
    v_tier_weight := coalesce(
      case when v_params #>> array['tier_weights', v_tier] ~ '^\d+(\.\d+)?$' then (v_params #>> array['tier_weights', v_tier])::numeric end,
      case v_tier when 'hot' then 1.0 when 'warm' then 0.8 else 0.6 end);
    if v_lead.attributes ->> 'latitude' ~ '^-?\d{1,2}(\.\d+)?$' and v_lead.attributes ->> 'longitude' ~ '^-?\d{1,3}(\.\d+)?$' then
      v_lat := (v_lead.attributes ->> 'latitude')::numeric;
      v_lon := (v_lead.attributes ->> 'longitude')::numeric;
    end if;
    v_order_strategy := case
      when v_strategy = 'score_tiered' and v_tier <> 'hot' then 'weighted_round_robin'
      else v_strategy end;
    if v_strategy = 'direct_to_owner' then
      select la.to_agent_id into v_prev_owner from app_public.lead_assignments la
       where la.tenant_id = v_tenant and la.lead_id = v_lead.id and la.to_agent_id is not null
       order by la.assigned_at desc, la.id desc limit 1;
      if v_prev_owner is null then
        select o.agent_id into v_prev_owner from app_public.routing_offers o
         where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.status = 'accepted'
         order by o.responded_at desc nulls last limit 1;
      end if;
      if v_prev_owner is null and (v_lead.phone is not null or v_lead.email is not null) then
        select l2.owner_agent_id into v_prev_owner from app_public.leads l2
         where l2.tenant_id = v_tenant and l2.id <> v_lead.id and l2.owner_agent_id is not null
           and (l2.phone = v_lead.phone or l2.email = v_lead.email)
         order by l2.updated_at desc limit 1;
      end if;
    end if;

    with base as (
      select a.id as agent_id, a.display_name as name, a.routing_weight as weight,
             av.status, av.current_load, av.max_capacity,
             coalesce(cr.credit, 0) as credit,
             v_lead.service_line is null or sk.n > 0 as skill_ok,
             coalesce(sk.proficiency, 3) as proficiency,
             case when v_lead.service_line is not null and sk.n > 0 then coalesce(sk.lang_ok, false)
                  else app_hidden.language_matches(v_lead.language, a.languages) end as language_ok,
             ar.n = 0 or coalesce(ar.matched, false) as area_ok,
             ar.n > 0 and not coalesce(ar.matched, false) and coalesce(ar.has_radius, false) and v_lat is null as area_unknown,
             coalesce(av.status = 'available', false) as availability_ok,
             coalesce(av.current_load < av.max_capacity, false) as capacity_ok,
             v_lead.event_date is null or exists (
               select 1 from app_public.availability_slots s
                where s.tenant_id = v_tenant and s.agent_id = a.id and s.slot_date = v_lead.event_date and s.status = 'free'
                  and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)) as slot_ok,
             not exists (
               select 1 from app_public.routing_offers o
                where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.agent_id = a.id and o.status in ('rejected', 'expired')) as not_rejected,
             coalesce(pm.conv, 0.5) as conversion,
             coalesce(pm.conv_hot, 0.5) as conversion_hot
        from app_public.agents a
        left join app_public.agent_availability av on av.tenant_id = a.tenant_id and av.agent_id = a.id
        left join app_public.agent_routing_credits cr on cr.agent_id = a.id
        left join lateral (
          select pg_catalog.count(*) as n, pg_catalog.max(s.proficiency) as proficiency,
                 pg_catalog.bool_or(app_hidden.language_matches(v_lead.language,
                   case when pg_catalog.cardinality(s.languages) > 0 then s.languages else a.languages end)) as lang_ok
            from app_public.agent_specializations s
           where s.tenant_id = a.tenant_id and s.agent_id = a.id
             and (v_lead.service_line is null or (
                   s.service_line = v_lead.service_line
               and (s.customer_segment = 'any' or v_lead.customer_segment is null or s.customer_segment = v_lead.customer_segment)
               and (pg_catalog.cardinality(s.territories) = 0 or v_lead.region = any (s.territories))))
        ) sk on true
        left join lateral (
          select pg_catalog.count(*) as n,
                 pg_catalog.bool_or(case z.kind
                   when 'region' then pg_catalog.upper(z.region) = pg_catalog.upper(v_lead.region) and z.country = v_lead.country
                   when 'city' then pg_catalog.lower(z.city) = pg_catalog.lower(v_lead.city)
                                    and (z.region is null or v_lead.region is null or pg_catalog.upper(z.region) = pg_catalog.upper(v_lead.region))
                   when 'postal_code' then pg_catalog.upper(pg_catalog.btrim(z.postal_code)) = pg_catalog.upper(pg_catalog.btrim(v_lead.postal_code))
                   when 'radius' then app_hidden.distance_miles(z.center_latitude, z.center_longitude, v_lat, v_lon) <= z.radius_miles
                 end) as matched,
                 pg_catalog.bool_or(z.kind = 'radius') as has_radius
            from app_public.agent_service_areas z
           where z.tenant_id = a.tenant_id and z.agent_id = a.id
        ) ar on true
        left join lateral (
          select case v_tier when 'hot' then m.conversion_rate_hot when 'warm' then m.conversion_rate_warm else m.conversion_rate_cold end as conv,
                 m.conversion_rate_hot as conv_hot
            from app_public.agent_performance_metrics m
           where m.tenant_id = a.tenant_id and m.agent_id = a.id
           order by m.period_start desc, m.computed_at desc
           limit 1
        ) pm on true
       where a.tenant_id = v_tenant and a.is_active
         and (v_restrict is null or a.id = any (v_restrict))
    ),
    scored as (
      select b.*,
             b.skill_ok and b.language_ok and b.area_ok and b.availability_ok and b.capacity_ok and b.slot_ok and b.not_rejected as eligible,
             case when b.max_capacity > 0 then b.current_load::numeric / b.max_capacity else 1 end as load_ratio
        from base b
    ),
    keyed as (
      select s.*,
             case v_order_strategy
               when 'weighted_round_robin' then s.credit + s.weight
               when 'least_loaded' then s.load_ratio
               when 'best_match' then s.proficiency * s.conversion * v_tier_weight
               when 'score_tiered' then s.conversion_hot
               when 'direct_to_owner' then case when s.agent_id = v_prev_owner then 1 else 0 end
             end as score,
             case v_order_strategy
               when 'weighted_round_robin' then s.credit + s.weight
               when 'least_loaded' then -s.load_ratio
               when 'best_match' then s.proficiency * s.conversion * v_tier_weight
               when 'score_tiered' then s.conversion_hot
               when 'direct_to_owner' then case when s.agent_id = v_prev_owner then 1 else 0 end
             end as k1,
             case v_order_strategy
               when 'weighted_round_robin' then s.weight::numeric
               when 'least_loaded' then s.credit
               when 'direct_to_owner' then s.credit + s.weight
               else -s.load_ratio
             end as k2
        from scored s
    ),
    ranked as (
      select k.*, case when k.eligible then pg_catalog.row_number() over (partition by k.eligible order by k.k1 desc, k.k2 desc, k.agent_id) end as rank
        from keyed k
    )
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
             'agent_id', r.agent_id,
             'name', r.name,
             'checks', pg_catalog.jsonb_build_object(
               'skill', r.skill_ok, 'language', r.language_ok, 'area', r.area_ok, 'availability', r.availability_ok,
               'capacity', r.capacity_ok, 'slot', r.slot_ok, 'not_rejected', r.not_rejected),
             'reasons', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
               'skill', case when not r.skill_ok then pg_catalog.format('no specialization in %s%s%s', v_lead.service_line,
                   case when v_lead.customer_segment is not null then ' for segment ' || v_lead.customer_segment else '' end,
                   case when v_lead.region is not null then ' licensed for ' || v_lead.region else '' end) end,
               'language', case when not r.language_ok then pg_catalog.format('does not speak %s', v_lead.language) end,
               'area', case when not r.area_ok then case when r.area_unknown then 'unknown location'
                   else pg_catalog.format('outside the service areas (lead in %s)',
                     coalesce(nullif(pg_catalog.concat_ws(', ', v_lead.city, v_lead.region, v_lead.postal_code), ''), 'an unknown place')) end end,
               'availability', case when not r.availability_ok then
                   case when r.status is null then 'no availability record' else pg_catalog.format('status is %s', r.status) end end,
               'capacity', case when not r.capacity_ok then
                   case when r.status is null then 'no availability record' else pg_catalog.format('at capacity (%s of %s)', r.current_load, r.max_capacity) end end,
               'slot', case when not r.slot_ok then pg_catalog.format('no free slot on %s', v_lead.event_date) end,
               'not_rejected', case when not r.not_rejected then 'already rejected this lead or let its offer expire' end)),
             'eligible', r.eligible,
             'score', pg_catalog.trim_scale(pg_catalog.round(r.score, 4)),
             'rank', r.rank,
             'weight', r.weight,
             'credit', r.credit,
             'load', r.current_load,
             'capacity', r.max_capacity,
             'proficiency', r.proficiency,
             'conversion', r.conversion)
           order by r.rank nulls last, r.name, r.agent_id), '[]'::jsonb),
           pg_catalog.array_agg(r.agent_id order by r.rank) filter (where r.eligible),
           pg_catalog.sum(r.weight) filter (where r.eligible)
      into v_candidates, v_order, v_total_weight
      from ranked r;

    -- 5. Take the first candidate whose availability (and slot) can be locked and still holds.
    --    Pass 1 skips rows other routings hold; only if that finds nobody, wait for the skipped ones.
    if v_order is not null then
      foreach v_agent in array v_order loop
        select av.* into v_av from app_public.agent_availability av
         where av.tenant_id = v_tenant and av.agent_id = v_agent
         for update skip locked;
        if not found then
          v_skipped := v_skipped || v_agent;
          continue;
        end if;
        if v_av.status <> 'available' or v_av.current_load >= v_av.max_capacity then
          v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, pg_catalog.format('changed while routing: status %s, load %s of %s', v_av.status, v_av.current_load, v_av.max_capacity));
          continue;
        end if;
        v_slot := null;
        if v_lead.event_date is not null then
          select s.id into v_slot from app_public.availability_slots s
           where s.tenant_id = v_tenant and s.agent_id = v_agent and s.slot_date = v_lead.event_date and s.status = 'free'
             and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)
           order by s.start_time
           limit 1
           for update skip locked;
          if v_slot is null then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'the slot was taken while routing');
            continue;
          end if;
        end if;
        v_chosen := v_agent;
        v_chosen_slot := v_slot;
        exit;
      end loop;

      if v_chosen is null and pg_catalog.cardinality(v_skipped) > 0 then
        foreach v_agent in array v_skipped loop
          begin
            select av.* into v_av from app_public.agent_availability av
             where av.tenant_id = v_tenant and av.agent_id = v_agent
             for update;
          exception when deadlock_detected then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'could not be locked (deadlock avoided)');
            continue;
          end;
          if not found or v_av.status <> 'available' or v_av.current_load >= v_av.max_capacity then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, pg_catalog.format('changed while routing: status %s, load %s of %s', v_av.status, v_av.current_load, v_av.max_capacity));
            continue;
          end if;
          v_slot := null;
          if v_lead.event_date is not null then
            select s.id into v_slot from app_public.availability_slots s
             where s.tenant_id = v_tenant and s.agent_id = v_agent and s.slot_date = v_lead.event_date and s.status = 'free'
               and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)
             order by s.start_time
             limit 1
             for update skip locked;
            if v_slot is null then
              v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'the slot was taken while routing');
              continue;
            end if;
          end if;
          v_chosen := v_agent;
          v_chosen_slot := v_slot;
          exit;
        end loop;
      end if;
    end if;

    if v_chosen is null then
      if v_order is null then
        select pg_catalog.string_agg(pg_catalog.format('%s %s', c.n, c.k), ', ' order by c.n desc, c.k) into v_failed
          from (select k.key as k, pg_catalog.count(*) as n
                  from pg_catalog.jsonb_array_elements(v_candidates) e, pg_catalog.jsonb_each(e -> 'checks') k
                 where k.value = 'false'::jsonb group by k.key) c;
        v_reason := case when pg_catalog.jsonb_array_length(v_candidates) = 0
          then case when v_restrict is not null then pg_catalog.format('No eligible agent: rule "%s" allows no active agent', v_rule.name)
                    else 'No eligible agent: the tenant has no active agents' end
          else pg_catalog.format('No eligible agent among %s considered (failed checks: %s)', pg_catalog.jsonb_array_length(v_candidates), v_failed) end;
      else
        v_reason := pg_catalog.format('No agent available: all %s eligible agents became busy or unavailable while routing', pg_catalog.cardinality(v_order));
      end if;
    end if;
  end if;

  -- 6. The decision.
  if v_chosen is not null then
    v_wrr_used := v_order_strategy = 'weighted_round_robin'
      or (v_order_strategy = 'direct_to_owner' and v_chosen is distinct from v_prev_owner);
    select a.display_name, a.user_id into v_agent_name, v_agent_user
      from app_public.agents a where a.tenant_id = v_tenant and a.id = v_chosen;
    update app_public.agent_availability av set current_load = av.current_load + 1
     where av.tenant_id = v_tenant and av.agent_id = v_chosen;
    if v_wrr_used then
      -- Smooth weighted round robin: every eligible agent earns its weight, the chosen one pays the total.
      insert into app_public.agent_routing_credits (agent_id, tenant_id)
      select e, v_tenant from pg_catalog.unnest(v_order) e order by e
      on conflict (agent_id) do nothing;
      perform 1 from app_public.agent_routing_credits c where c.agent_id = any (v_order) order by c.agent_id for update;
      update app_public.agent_routing_credits c
         set credit = c.credit + a.routing_weight - case when c.agent_id = v_chosen then v_total_weight else 0 end,
             updated_at = pg_catalog.now()
        from app_public.agents a
       where a.tenant_id = v_tenant and a.id = c.agent_id and c.agent_id = any (v_order);
    end if;
    v_assign_strategy := case
      when v_strategy = 'direct_to_owner' and v_chosen is distinct from v_prev_owner then 'weighted_round_robin'
      when v_rule.action in ('route_to_agent', 'route_to_agents') and v_rule.strategy is null and v_variant_id is null then 'rule'
      else v_strategy end;
    v_reason := pg_catalog.format('%s chosen by %s%s', v_agent_name, pg_catalog.replace(v_assign_strategy, '_', ' '),
      case when v_strategy = 'direct_to_owner' and v_chosen is distinct from v_prev_owner then
        case when v_prev_owner is null then ' (direct to owner: the lead has no previous owner)'
             else ' (direct to owner: the previous owner is not eligible or busy)' end
      when v_strategy = 'direct_to_owner' then ' (direct to owner: the previous owner)'
      when v_strategy = 'score_tiered' then pg_catalog.format(' (score tiered: %s lead)', v_tier)
      else '' end);

    v_direct := coalesce(case when pg_catalog.jsonb_typeof(app_private.routing_setting(v_tenant, 'routing.direct_assignment')) = 'boolean'
      then (app_private.routing_setting(v_tenant, 'routing.direct_assignment'))::text::boolean end, false);
    if v_direct then
      v_outcome := 'assigned';
      v_prev_setting_strategy := pg_catalog.current_setting('app.assignment_strategy', true);
      v_prev_setting_reason := pg_catalog.current_setting('app.assignment_reason', true);
      v_prev_setting_source := pg_catalog.current_setting('app.change_source', true);
      perform pg_catalog.set_config('app.assignment_strategy', v_assign_strategy, true);
      perform pg_catalog.set_config('app.assignment_reason', 'Routing: ' || v_reason, true);
      perform pg_catalog.set_config('app.change_source', 'routing', true);
      update app_public.leads l
         set owner_agent_id = v_chosen,
             owner_user_id = coalesce(v_agent_user, l.owner_user_id)
       where l.tenant_id = v_tenant and l.id = v_lead.id;
      perform pg_catalog.set_config('app.assignment_strategy', coalesce(v_prev_setting_strategy, ''), true);
      perform pg_catalog.set_config('app.assignment_reason', coalesce(v_prev_setting_reason, ''), true);
      perform pg_catalog.set_config('app.change_source', coalesce(v_prev_setting_source, ''), true);
      if v_chosen_slot is not null then
        update app_public.availability_slots s
           set status = 'booked', booked_lead_id = v_lead.id, locked_until = null, locked_by_lead_id = null
         where s.id = v_chosen_slot;
      end if;
    else
      v_outcome := 'offered';
      v_setting := app_private.routing_setting(v_tenant, 'routing.offer_timeout_seconds');
      v_timeout := case when pg_catalog.jsonb_typeof(v_setting) = 'number' and (v_setting::text)::numeric > 0 then (v_setting::text)::numeric else 120 end;
      v_expires := pg_catalog.now() + pg_catalog.make_interval(secs => v_timeout::float8);
      insert into app_public.routing_offers (tenant_id, lead_id, agent_id, slot_id, expires_at)
      values (v_tenant, v_lead.id, v_chosen, v_chosen_slot, v_expires)
      returning id into v_offer_id;
      if v_chosen_slot is not null then
        update app_public.availability_slots s set locked_until = v_expires, locked_by_lead_id = v_lead.id
         where s.id = v_chosen_slot;
      end if;
      perform app_private.add_job('routing__expire_offer', pg_catalog.json_build_object('offer_id', v_offer_id),
        run_at => v_expires, job_key => 'routing_offer:' || v_offer_id);
      v_reason := v_reason || pg_catalog.format('; offer expires in %s s', v_timeout);
    end if;
    update app_public.assignment_queue q set dequeued_at = pg_catalog.now(), dequeue_reason = 'routed'
     where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null;
  else
    -- 7. Nobody: wait in a queue with an SLA.
    v_outcome := 'queued';
    v_queue_type := coalesce(v_queue_type, case
      when v_trigger in ('escalation', 'offer_rejected', 'offer_expired') then 'reassignment'
      when v_lead.lead_score >= coalesce(v_hot_threshold, 70) or v_lead.status = 'hot' then 'hot'
      when v_lead.status in ('nurturing', 'cold') then 'nurture'
      when v_lead.event_date is not null then 'waiting'
      else 'active' end);
    v_setting := app_private.routing_setting(v_tenant, 'routing.sla_seconds.' || v_queue_type);
    v_sla := case when pg_catalog.jsonb_typeof(v_setting) = 'number' and (v_setting::text)::numeric > 0 then (v_setting::text)::numeric
      else case v_queue_type when 'hot' then 300 when 'active' then 900 when 'reassignment' then 600 when 'nurture' then 86400 else 3600 end end;
    -- A lead already waiting keeps its place (the lead row lock serialises routing of this lead;
    -- the unique index assignment_queue_one_waiting_entry_per_lead is the backstop).
    if not exists (select 1 from app_public.assignment_queue q
                    where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null) then
      begin
        insert into app_public.assignment_queue (tenant_id, lead_id, queue_type, priority, lead_score, sla_expires_at)
        values (v_tenant, v_lead.id, v_queue_type,
          case v_queue_type when 'reassignment' then 300 when 'hot' then 200 when 'active' then 100 when 'waiting' then 50 else 0 end,
          v_lead.lead_score, pg_catalog.now() + pg_catalog.make_interval(secs => v_sla::float8));
      exception when unique_violation then
        null;
      end;
    end if;
    v_reason := v_reason || pg_catalog.format('; queued in %s', v_queue_type);
  end if;

  -- Lock-time notes go with their candidates.
  if v_notes <> '{}'::jsonb then
    select pg_catalog.jsonb_agg(case when v_notes ? (e ->> 'agent_id') then e || pg_catalog.jsonb_build_object('lock', v_notes ->> (e ->> 'agent_id')) else e end
             order by o.n)
      into v_candidates
      from pg_catalog.jsonb_array_elements(v_candidates) with ordinality o(e, n);
  end if;

  insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, strategy, rule_id, experiment_id, variant_id, lead_score,
    candidates, chosen_agent_id, outcome, reason)
  values (v_tenant, v_lead.id, v_trigger, v_strategy, v_rule.id, v_experiment_id, v_variant_id, v_lead.lead_score,
    v_candidates, v_chosen, v_outcome, v_reason)
  returning id into v_history_id;
  insert into app_public.routing_events (tenant_id, lead_id, agent_id, offer_id, event_type, data)
  values (v_tenant, v_lead.id, v_chosen, v_offer_id, v_outcome,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('history_id', v_history_id, 'strategy', v_strategy,
      'queue_type', v_queue_type, 'expires_at', v_expires, 'slot_id', v_chosen_slot, 'reason', v_reason)));
  return v_history_id;
end;
$$;
comment on function app_private.route_lead(uuid, uuid, text) is $$Routes one lead in the caller's transaction and returns the lead_routing_history id of the decision.
trigger: new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue (22023 otherwise); P0002 when the lead is not the tenant's.
Not routed (with the reason): deleted lead, number on the DNC list (or status dnc), closed lead (final status), lead already assigned to an agent, lead with a pending offer.
Candidates: the tenant's active agents (only the rule's agents for route_to_agent/route_to_agents), each checked for skill (a specialization for the lead's service_line, segment 'any' or equal, territories empty or containing the lead's region; no service_line matches everyone), language (lead.language among the specialization's or agent's languages, en-US ~ en), area (no areas = everywhere; region, city (case-insensitive), postal code, or radius around attributes.latitude/longitude, 'unknown location' without them), availability (status available), capacity (current_load < max_capacity), slot (event leads: a free, unlocked slot on event_date) and not_rejected (no rejected/expired offer of this lead).
Escalation (trigger escalation) widens the candidate set: the rule's agent list and route_to_queue action are ignored.
Strategy: the matching rule's (app_private.matching_routing_rule), else system_config routing.default_strategy, else weighted_round_robin; a running experiment's variant (app_private.experiment_variant_for_lead, when that function exists) overrides it. weighted_round_robin = smooth WRR on agent_routing_credits (eligible agents earn their weight, the chosen pays the eligible total); least_loaded = lowest load/capacity (ties: credit, id); best_match = proficiency x recent conversion for the lead's tier (0.5 when unknown) x tier weight; score_tiered = hot leads (score >= 70) to the best hot converters, others WRR; direct_to_owner = the previous owner agent if eligible, else WRR.
Concurrency: the lead row is locked first (one decision per lead; routing_offers_one_pending_per_lead is the backstop); candidates are tried in strategy order with FOR UPDATE SKIP LOCKED on agent_availability, re-checking status and load under the lock, and only when every eligible agent was skipped does it wait (plain FOR UPDATE) for them in order, so busy tenants do not see false "no agent available"; the event slot is locked and re-checked too; credit rows are locked last, in agent_id order. Lock order: lead, agent_availability, availability_slots, agent_routing_credits.
LOAD RULE: a pending offer reserves capacity. Offering adds 1 to the agent's current_load (as does direct assignment); accept keeps it; reject, expiry and cancellation must give it back (current_load - 1) and release the slot lock.
Outcomes: offered (routing_offers row expiring after system_config routing.offer_timeout_seconds, default 120; slot locked until then; job routing__expire_offer {offer_id} at expires_at with job_key routing_offer:<id>), assigned (system_config routing.direct_assignment = true: owner_agent_id and, for members, owner_user_id; slot booked; recorded in lead_assignments with the strategy), queued (assignment_queue with the SLA of system_config routing.sla_seconds.<queue>, defaults hot 300, active 900, reassignment 600, nurture 86400, waiting 3600; an existing waiting entry keeps its place), not_routed. Every call writes lead_routing_history and a routing_events row.$$;

create function app_public.route_lead(lead_id uuid) returns app_public.lead_routing_history
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := app_private.require_manager('route leads');
  v_id bigint;
  r app_public.lead_routing_history;
begin
  if route_lead.lead_id is null or not exists (
    select 1 from app_public.leads l where l.tenant_id = v_tenant and l.id = route_lead.lead_id) then
    raise exception 'Lead not found' using errcode = 'P0002';
  end if;
  v_id := app_private.route_lead(v_tenant, route_lead.lead_id, 'manual');
  select h.* into r from app_public.lead_routing_history h where h.id = v_id;
  return r;
end;
$$;
comment on function app_public.route_lead(uuid) is $$Routes a lead of your tenant now (owners, admins and managers): offers it to the best eligible agent, assigns it directly when the tenant uses direct assignment, queues it when nobody can take it, or records why it was not routed. Returns the decision (see explainRouting for a readable form). Errors: 28000 not logged in, 42501 not a manager, P0002 unknown lead (or another tenant's).$$;
grant execute on function app_public.route_lead(uuid) to :DATABASE_VISITOR;

--------------------------------------------------------------------------------
-- explain_routing
--------------------------------------------------------------------------------

create type app_public.routing_explanation as (
  history_id bigint,
  routed_at timestamptz,
  trigger text,
  outcome text,
  strategy text,
  rule_name text,
  variant_name text,
  chosen_agent_id uuid,
  chosen_agent_name text,
  summary text,
  candidate_lines text[],
  candidates jsonb
);
comment on type app_public.routing_explanation is 'One routing decision in words (see explain_routing).';
comment on column app_public.routing_explanation.history_id is 'The lead_routing_history id.';
comment on column app_public.routing_explanation.routed_at is 'When the decision was made.';
comment on column app_public.routing_explanation.trigger is 'What caused it (new_lead, manual, offer_rejected, ...).';
comment on column app_public.routing_explanation.outcome is 'offered, assigned, queued or not_routed.';
comment on column app_public.routing_explanation.strategy is 'The strategy used.';
comment on column app_public.routing_explanation.rule_name is 'The rule that matched, if any.';
comment on column app_public.routing_explanation.variant_name is 'The experiment variant used, if any.';
comment on column app_public.routing_explanation.chosen_agent_id is 'The agent chosen, if any.';
comment on column app_public.routing_explanation.chosen_agent_name is 'The chosen agent''s name.';
comment on column app_public.routing_explanation.summary is 'The decision in one plain-English sentence.';
comment on column app_public.routing_explanation.candidate_lines is 'One line per agent considered: eligible with its score, or the checks it failed and why.';
comment on column app_public.routing_explanation.candidates is 'The candidates as recorded (JSON): checks, reasons, scores, ranks.';

create function app_public.explain_routing(lead_id uuid) returns setof app_public.routing_explanation
  language plpgsql stable
  -- SECURITY INVOKER: row-level security keeps other tenants' decisions out of sight.
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := app_public.current_tenant_id();
begin
  if v_tenant is null then
    if app_public.current_user_id() is null and app_public.current_api_key_id() is null then
      raise exception 'You must be logged in to explain routing' using errcode = '28000';
    end if;
    raise exception 'You are not a member of that tenant' using errcode = '42501';
  end if;
  if explain_routing.lead_id is null or not exists (select 1 from app_public.leads l where l.id = explain_routing.lead_id) then
    raise exception 'Lead not found' using errcode = 'P0002';
  end if;
  return query
  select h.id, h.routed_at, h.trigger, h.outcome, h.strategy, rr.name, v.name, h.chosen_agent_id, a.display_name,
         case h.outcome
           when 'offered' then pg_catalog.format('Offered to %s: %s.', coalesce(a.display_name, '?'), h.reason)
           when 'assigned' then pg_catalog.format('Assigned to %s: %s.', coalesce(a.display_name, '?'), h.reason)
           when 'queued' then pg_catalog.format('Queued: %s.', h.reason)
           else pg_catalog.format('Not routed: %s.', h.reason)
         end
         || case when rr.name is not null then pg_catalog.format(' Rule "%s" matched.', rr.name) else '' end
         || case when v.name is not null then pg_catalog.format(' Experiment variant "%s" chose the strategy.', v.name) else '' end
         || case when pg_catalog.jsonb_array_length(h.candidates) > 0 then pg_catalog.format(' %s of %s agents were eligible.',
              (select pg_catalog.count(*) from pg_catalog.jsonb_array_elements(h.candidates) e where (e ->> 'eligible')::boolean),
              pg_catalog.jsonb_array_length(h.candidates)) else '' end,
         coalesce((
           select pg_catalog.array_agg(
                    case when (e ->> 'eligible')::boolean then
                      pg_catalog.format('%s: eligible (rank %s, score %s)%s%s', e ->> 'name', e ->> 'rank', e ->> 'score',
                        case when (e ->> 'agent_id')::uuid = h.chosen_agent_id then ', chosen' else '' end,
                        case when e ? 'lock' then ', ' || (e ->> 'lock') else '' end)
                    else pg_catalog.format('%s: not eligible, failed %s', e ->> 'name',
                        (select pg_catalog.string_agg(pg_catalog.format('%s (%s)', k.key, coalesce(e -> 'reasons' ->> k.key, 'failed')), ', ' order by k.key)
                           from pg_catalog.jsonb_each(e -> 'checks') k where k.value = 'false'::jsonb))
                    end order by o.n)
             from pg_catalog.jsonb_array_elements(h.candidates) with ordinality o(e, n)), '{}'::text[]),
         h.candidates
    from app_public.lead_routing_history h
    left join app_public.routing_rules rr on rr.tenant_id = h.tenant_id and rr.id = h.rule_id
    left join app_public.routing_experiment_variants v on v.tenant_id = h.tenant_id and v.id = h.variant_id
    left join app_public.agents a on a.tenant_id = h.tenant_id and a.id = h.chosen_agent_id
   where h.lead_id = explain_routing.lead_id
   order by h.routed_at, h.id;
end;
$$;
comment on function app_public.explain_routing(uuid) is $$Every routing decision about a lead of your tenant, oldest first, in words: the outcome and why, the strategy, rule and experiment variant, and one line per agent considered (eligible with rank and score, or which checks failed and why: skill, language, area, availability, capacity, slot, not_rejected). Any member may ask. Errors: 28000 not logged in, P0002 unknown lead (or another tenant's).$$;
grant execute on function app_public.explain_routing(uuid) to :DATABASE_VISITOR;

--! split: 030-offers-queue.sql
--------------------------------------------------------------------------------
-- Offer lifecycle, the assignment queue and the routing jobs.
--
--   accept_offer / reject_offer (the offered agent, or managers and up), expire_offer (the job
--   routing__expire_offer that route_lead enqueues for expires_at), queue draining when capacity
--   appears (job routing__drain_queue), SLA escalation (cron routing__escalate), cleanup of expired
--   slot locks (cron routing__release_locks) and automatic routing of new leads (system_config
--   routing.auto_route: off | inline | job; job lead__route).
--
-- Capacity: route_lead reserves one unit of agent_availability.current_load when it makes an offer.
-- Accepting keeps it (the lead is now held); rejecting or expiring gives it back (never below 0).
--
-- Locking order, shared with route_lead: the lead row first (for no key update), then the offer, then the slot and the
-- agent's availability. Every transition locks the lead and re-reads the offer, so concurrent
-- accept / reject / expire calls on one offer make exactly one transition.
--
-- Idempotent: drops what it creates. 010 recreates the routing tables on every run, which drops the
-- triggers on them and the functions returning their row types; the rest is dropped here.
--------------------------------------------------------------------------------

drop trigger if exists _910_auto_route on app_public.leads;
drop trigger if exists _200_validate_auto_route on app_public.system_config;
drop trigger if exists _900_enqueue_queue_drain_on_insert on app_public.agent_availability;
drop trigger if exists _900_enqueue_queue_drain_on_update on app_public.agent_availability;
drop trigger if exists _900_enqueue_queue_drain_on_insert on app_public.availability_slots;
drop trigger if exists _900_enqueue_queue_drain_on_update on app_public.availability_slots;
drop trigger if exists _900_enqueue_queue_drain on app_public.agents;
drop function if exists app_public.accept_offer(uuid);
drop function if exists app_public.reject_offer(uuid, text);
drop function if exists app_private.expire_offer(uuid);
drop function if exists app_private.offer_for_response(uuid, text);
drop function if exists app_private.release_offer_hold(uuid, uuid, uuid, uuid);
drop function if exists app_private.drain_routing_queue(uuid);
drop function if exists app_private.enqueue_queue_drain(uuid);
drop function if exists app_private.escalate_expired_queue_entries();
drop function if exists app_private.release_expired_slot_locks();
drop function if exists app_private.routing_outcome(bigint);
drop function if exists app_private.auto_route_mode(uuid);
drop function if exists app_private.tg_leads__auto_route() cascade;
drop function if exists app_private.tg_system_config__validate_auto_route() cascade;
drop function if exists app_private.tg_agent_availability__enqueue_queue_drain() cascade;
drop function if exists app_private.tg_availability_slots__enqueue_queue_drain() cascade;
drop function if exists app_private.tg_agents__enqueue_queue_drain() cascade;

--------------------------------------------------------------------------------
-- Offers
--------------------------------------------------------------------------------

-- Shared by accept_offer and reject_offer: who may respond, and the offer locked (lead first).
create function app_private.offer_for_response(offer_id uuid, action text) returns app_public.routing_offers
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_public.current_tenant_id();
  v_offer app_public.routing_offers;
begin
  if v_tenant_id is null then
    if app_public.current_user_id() is null and app_public.current_api_key_id() is null then
      raise exception 'You must be logged in to % an offer', action using errcode = '28000';
    end if;
    raise exception 'You are not a member of that tenant' using errcode = '42501';
  end if;
  select o.* into v_offer from app_public.routing_offers o
   where o.id = offer_for_response.offer_id and o.tenant_id = v_tenant_id;
  if v_offer.id is null then
    raise exception 'Offer not found in this tenant' using errcode = 'P0002';
  end if;
  if not app_hidden.current_user_has_role('manager') and not exists (
       select 1 from app_public.agents a
        where a.tenant_id = v_tenant_id and a.id = v_offer.agent_id
          and a.user_id is not null and a.user_id = app_public.current_user_id()) then
    raise exception 'Only the agent the lead was offered to, or managers, admins and owners, can % this offer', action
      using errcode = '42501';
  end if;
  -- Lead first (route_lead's order), then the offer, re-read after the wait.
  perform 1 from app_public.leads l where l.tenant_id = v_tenant_id and l.id = v_offer.lead_id for no key update;
  select o.* into v_offer from app_public.routing_offers o
   where o.id = offer_for_response.offer_id and o.tenant_id = v_tenant_id
   for update;
  if v_offer.status <> 'pending' then
    raise exception 'Invalid offer_id: the offer is already % and can no longer be %ed', v_offer.status, action
      using errcode = '22023';
  end if;
  if v_offer.expires_at <= pg_catalog.now() then
    raise exception 'Invalid offer_id: the offer expired at % and can no longer be %ed', v_offer.expires_at, action
      using errcode = '22023';
  end if;
  return v_offer;
end;
$$;
comment on function app_private.offer_for_response(uuid, text) is 'For accept_offer and reject_offer: the pending, unexpired offer of the current tenant, locked (its lead first, then the offer). Errors: 28000 not logged in; 42501 not a member, or neither the offered agent''s own user nor a manager, admin or owner; P0002 no such offer in this tenant; 22023 the offer is no longer pending, or has expired (expires_at <= now()).';

-- Gives back what a pending offer held: one unit of the agent's load (never below 0) and the slot lock.
create function app_private.release_offer_hold(tenant_id uuid, agent_id uuid, lead_id uuid, slot_id uuid) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.agent_availability av
     set current_load = greatest(av.current_load - 1, 0)
   where av.tenant_id = release_offer_hold.tenant_id and av.agent_id = release_offer_hold.agent_id;
  if release_offer_hold.slot_id is not null then
    update app_public.availability_slots s
       set locked_until = null, locked_by_lead_id = null
     where s.tenant_id = release_offer_hold.tenant_id and s.id = release_offer_hold.slot_id
       and s.locked_by_lead_id = release_offer_hold.lead_id;
  end if;
end;
$$;
comment on function app_private.release_offer_hold(uuid, uuid, uuid, uuid) is 'Internal: a pending offer ended without an assignment, so the agent''s reserved load goes down by one (never below 0) and the slot the offer held (if this lead still holds it) is released. The callers lock the offer first, so this runs once per offer.';

create function app_public.accept_offer(offer_id uuid) returns app_public.routing_offers
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.routing_offers := app_private.offer_for_response(accept_offer.offer_id, 'accept');
  v_agent app_public.agents;
  v_lead app_public.leads;
  v_history app_public.lead_routing_history;
  v_strategy text;
  v_slot app_public.availability_slots;
  v_blocked int := 0;
  v_previous_strategy text := pg_catalog.current_setting('app.assignment_strategy', true);
  v_previous_reason text := pg_catalog.current_setting('app.assignment_reason', true);
  v_previous_source text := pg_catalog.current_setting('app.change_source', true);
begin
  select l.* into v_lead from app_public.leads l where l.tenant_id = v_offer.tenant_id and l.id = v_offer.lead_id;
  if v_lead.deleted_at is not null then
    raise exception 'Invalid offer_id: the lead was deleted' using errcode = '22023';
  end if;
  select a.* into v_agent from app_public.agents a where a.tenant_id = v_offer.tenant_id and a.id = v_offer.agent_id;

  -- The held slot becomes the booking (it must still be this lead's, or free).
  if v_offer.slot_id is not null then
    select s.* into v_slot from app_public.availability_slots s
     where s.tenant_id = v_offer.tenant_id and s.id = v_offer.slot_id
     for update;
    if v_slot.id is null or v_slot.status <> 'free'
       or (v_slot.locked_by_lead_id is distinct from v_offer.lead_id and v_slot.locked_until > pg_catalog.now()) then
      raise exception 'Invalid offer_id: the calendar slot held for this offer is no longer free' using errcode = '22023';
    end if;
    update app_public.availability_slots s
       set status = 'booked', booked_lead_id = v_offer.lead_id, locked_until = null, locked_by_lead_id = null
     where s.tenant_id = v_offer.tenant_id and s.id = v_offer.slot_id;
    -- A DJ plays one event a day: the rest of that day's free, unheld slots are blocked automatically.
    if v_agent.kind = 'dj' then
      update app_public.availability_slots s
         set status = 'blocked', auto_blocked = true
       where s.tenant_id = v_offer.tenant_id and s.agent_id = v_offer.agent_id and s.slot_date = v_slot.slot_date
         and s.id <> v_slot.id and s.status = 'free'
         and (s.locked_until is null or s.locked_until <= pg_catalog.now());
      get diagnostics v_blocked = row_count;
    end if;
  end if;

  update app_public.routing_offers o
     set status = 'accepted', responded_at = pg_catalog.now()
   where o.id = v_offer.id
   returning o.* into v_offer;

  -- The strategy of the decision that made this offer, for the assignment history.
  select h.* into v_history from app_public.lead_routing_history h
   where h.tenant_id = v_offer.tenant_id and h.lead_id = v_offer.lead_id
     and h.outcome = 'offered' and h.chosen_agent_id = v_offer.agent_id
   order by h.id desc limit 1;
  v_strategy := case
    when v_history.strategy in ('round_robin', 'weighted_round_robin', 'least_loaded', 'best_match', 'score_tiered', 'direct_to_owner')
      then v_history.strategy
    when v_history.rule_id is not null then 'rule'
    else 'system'
  end;
  perform pg_catalog.set_config('app.assignment_strategy', v_strategy, true);
  perform pg_catalog.set_config('app.assignment_reason', 'Accepted routing offer ' || v_offer.id::text, true);
  perform pg_catalog.set_config('app.change_source', 'routing', true);
  update app_public.leads l
     set owner_agent_id = v_offer.agent_id,
         owner_user_id = coalesce(v_agent.user_id, l.owner_user_id)
   where l.tenant_id = v_offer.tenant_id and l.id = v_offer.lead_id;
  perform pg_catalog.set_config('app.assignment_strategy', coalesce(v_previous_strategy, ''), true);
  perform pg_catalog.set_config('app.assignment_reason', coalesce(v_previous_reason, ''), true);
  perform pg_catalog.set_config('app.change_source', coalesce(v_previous_source, ''), true);

  -- Should the lead still wait in a queue, it has an agent now.
  update app_public.assignment_queue q
     set dequeued_at = pg_catalog.now(), dequeue_reason = 'routed'
   where q.tenant_id = v_offer.tenant_id and q.lead_id = v_offer.lead_id and q.dequeued_at is null;

  insert into app_public.routing_events (tenant_id, lead_id, agent_id, offer_id, event_type, data)
  values
    (v_offer.tenant_id, v_offer.lead_id, v_offer.agent_id, v_offer.id, 'accepted',
     pg_catalog.jsonb_build_object('response_seconds', pg_catalog.round(extract(epoch from v_offer.responded_at - v_offer.offered_at)),
       'by_user_id', app_public.current_user_id())),
    (v_offer.tenant_id, v_offer.lead_id, v_offer.agent_id, v_offer.id, 'assigned',
     pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('via', 'offer', 'strategy', v_strategy,
       'routing_history_id', v_history.id, 'slot_id', v_offer.slot_id,
       'auto_blocked_slots', case when v_blocked > 0 then v_blocked end)));
  return v_offer;
end;
$$;
comment on function app_public.accept_offer(uuid) is 'Accepts a pending lead offer: the lead is assigned to the agent (owner_agent_id, and owner_user_id when the agent is a member; recorded in lead_assignments with the strategy of the routing decision), the load reserved by the offer stays, the held calendar slot is booked (for a DJ, the agent''s other free slots that day are blocked automatically, auto_blocked), and routing_events get "accepted" and "assigned". Only the offered agent''s own user, or managers, admins and owners. Errors: 28000 not logged in; 42501 not allowed; P0002 no such offer in this tenant; 22023 the offer is not pending, has expired, its lead was deleted, or its held slot is no longer free.';

create function app_public.reject_offer(offer_id uuid, reason text default null) returns app_public.routing_offers
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.routing_offers := app_private.offer_for_response(reject_offer.offer_id, 'reject');
  v_reason text := nullif(pg_catalog.btrim(reject_offer.reason), '');
begin
  update app_public.routing_offers o
     set status = 'rejected', responded_at = pg_catalog.now(), decline_reason = v_reason
   where o.id = v_offer.id
   returning o.* into v_offer;
  perform app_private.release_offer_hold(v_offer.tenant_id, v_offer.agent_id, v_offer.lead_id, v_offer.slot_id);
  insert into app_public.routing_events (tenant_id, lead_id, agent_id, offer_id, event_type, data)
  values (v_offer.tenant_id, v_offer.lead_id, v_offer.agent_id, v_offer.id, 'rejected',
          pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('reason', v_reason, 'by_user_id', app_public.current_user_id())));
  -- On to the next candidate at once (route_lead leaves out agents who rejected this lead).
  perform app_private.route_lead(v_offer.tenant_id, v_offer.lead_id, 'offer_rejected');
  return v_offer;
end;
$$;
comment on function app_public.reject_offer(uuid, text) is 'Rejects a pending lead offer (with an optional reason): the agent''s reserved load goes back down, the held slot is released, routing_events gets "rejected", and the lead is routed again at once (trigger offer_rejected; the agents who rejected it are left out). Same permissions and errors as accept_offer.';

create function app_private.expire_offer(offer_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.routing_offers;
begin
  select o.* into v_offer from app_public.routing_offers o where o.id = expire_offer.offer_id;
  if v_offer.id is null or v_offer.status <> 'pending' or v_offer.expires_at > pg_catalog.now() then
    return false;
  end if;
  perform 1 from app_public.leads l where l.tenant_id = v_offer.tenant_id and l.id = v_offer.lead_id for no key update;
  select o.* into v_offer from app_public.routing_offers o where o.id = expire_offer.offer_id for update;
  if v_offer.status <> 'pending' or v_offer.expires_at > pg_catalog.now() then
    return false;
  end if;
  update app_public.routing_offers o set status = 'expired' where o.id = v_offer.id;
  perform app_private.release_offer_hold(v_offer.tenant_id, v_offer.agent_id, v_offer.lead_id, v_offer.slot_id);
  insert into app_public.routing_events (tenant_id, lead_id, agent_id, offer_id, event_type, data)
  values (v_offer.tenant_id, v_offer.lead_id, v_offer.agent_id, v_offer.id, 'expired',
          pg_catalog.jsonb_build_object('expires_at', v_offer.expires_at));
  perform app_private.route_lead(v_offer.tenant_id, v_offer.lead_id, 'offer_expired');
  return true;
end;
$$;
comment on function app_private.expire_offer(uuid) is 'Times out a pending offer whose expires_at has passed: status expired, the agent''s reserved load goes back down (never below 0), the held slot is released, routing_events gets "expired", and the lead is routed again (trigger offer_expired). Returns false, changing nothing, when the offer does not exist, is no longer pending or has not expired yet, so the job routing__expire_offer may run early or twice.';

--------------------------------------------------------------------------------
-- The queue: draining when capacity appears
--------------------------------------------------------------------------------

create function app_private.routing_outcome(history_id bigint) returns text
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select h.outcome from app_public.lead_routing_history h where h.id = routing_outcome.history_id;
$$;
comment on function app_private.routing_outcome(bigint) is 'Internal: the outcome (offered, assigned, queued, not_routed) of a routing decision.';

create function app_private.enqueue_queue_drain(tenant_id uuid) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Only when someone is waiting: most availability changes then cost nothing.
  if exists (select 1 from app_public.assignment_queue q
              where q.tenant_id = enqueue_queue_drain.tenant_id and q.dequeued_at is null) then
    perform app_private.add_job('routing__drain_queue', pg_catalog.json_build_object('tenant_id', enqueue_queue_drain.tenant_id),
      job_key => 'routing_drain:' || enqueue_queue_drain.tenant_id::text);
  end if;
end;
$$;
comment on function app_private.enqueue_queue_drain(uuid) is 'Internal: when the tenant has leads waiting in assignment_queue, enqueues routing__drain_queue {tenant_id} (job key routing_drain:<tenant_id>, so a burst of changes makes one job) to run now.';

create function app_private.drain_routing_queue(tenant_id uuid) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  c_max_attempts constant int := 200;
  v_entry record;
  v_history_id bigint;
  v_outcome text;
  v_attempts int := 0;
  v_routed int := 0;
  v_left boolean := false;
begin
  -- One drain per tenant at a time (a new job may start while the previous one still runs).
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('routing_drain:' || drain_routing_queue.tenant_id::text, 0));
  -- Each waiting entry is tried at most once per drain, in queue order, so the loop always ends.
  for v_entry in
    select q.id, q.lead_id, q.queue_type from app_public.assignment_queue q
     where q.tenant_id = drain_routing_queue.tenant_id and q.dequeued_at is null
     order by q.priority desc, q.enqueued_at, q.id
  loop
    -- Nobody can take a lead any more: stop (the next agent who frees up starts a new drain).
    if not exists (
      select 1 from app_public.agent_availability av
        join app_public.agents a on a.tenant_id = av.tenant_id and a.id = av.agent_id
       where av.tenant_id = drain_routing_queue.tenant_id and a.is_active
         and av.status = 'available' and av.current_load < av.max_capacity) then
      exit;
    end if;
    if v_attempts >= c_max_attempts then
      v_left := true;
      exit;
    end if;
    -- Still waiting? (route_lead or accept_offer may have dequeued it meanwhile.)
    perform 1 from app_public.assignment_queue q where q.id = v_entry.id and q.dequeued_at is null;
    if not found then
      continue;
    end if;
    v_attempts := v_attempts + 1;
    -- One lead that fails to route must not hold up the others: logged, it keeps its place.
    begin
      v_history_id := app_private.route_lead(drain_routing_queue.tenant_id, v_entry.lead_id, 'agent_available');
      v_outcome := app_private.routing_outcome(v_history_id);
    exception when others then
      raise warning 'routing of queued lead % failed: % (%)', v_entry.lead_id, sqlerrm, sqlstate;
      continue;
    end;
    if v_outcome in ('offered', 'assigned', 'not_routed') then
      with dequeued as (
        update app_public.assignment_queue q
           set dequeued_at = pg_catalog.now(),
               dequeue_reason = case when v_outcome = 'not_routed' then 'cancelled' else 'routed' end
         where q.tenant_id = drain_routing_queue.tenant_id and q.lead_id = v_entry.lead_id and q.dequeued_at is null
         returning q.*)
      insert into app_public.routing_events (tenant_id, lead_id, event_type, data)
      select d.tenant_id, d.lead_id, 'dequeued',
             pg_catalog.jsonb_build_object('queue_type', d.queue_type, 'reason', d.dequeue_reason, 'routing_history_id', v_history_id)
        from dequeued d;
      if v_outcome <> 'not_routed' then
        v_routed := v_routed + 1;
      end if;
    end if;
  end loop;
  -- Stopped at the attempt limit after making progress: continue in a fresh job.
  if v_left and v_routed > 0 then
    perform app_private.enqueue_queue_drain(drain_routing_queue.tenant_id);
  end if;
  return v_routed;
end;
$$;
comment on function app_private.drain_routing_queue(uuid) is 'Routes the tenant''s waiting leads again (trigger agent_available) in queue order (priority desc, then enqueued_at), each at most once per call: an entry whose lead got an offer or an assignment leaves the queue (dequeue_reason routed), one that can no longer be routed (not_routed: deleted, DNC, already owned or offered) leaves as cancelled, one that is queued again keeps its place. Stops as soon as no active available agent has capacity left, or after 200 attempts (then queues another drain if it made progress). One drain per tenant at a time (advisory lock). Returns how many leads were offered or assigned. Run by the routing__drain_queue job.';

-- What makes capacity appear: an agent becomes available, their load drops or their capacity grows,
-- an agent is (re)activated, a slot becomes free.
create function app_private.tg_agent_availability__enqueue_queue_drain() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.enqueue_queue_drain(NEW.tenant_id);
  return null;
end;
$$;
comment on function app_private.tg_agent_availability__enqueue_queue_drain() is 'AFTER trigger on agent_availability: the agent became available, or their load dropped or capacity grew while available, so waiting leads are re-routed (routing__drain_queue).';
create trigger _900_enqueue_queue_drain_on_insert after insert on app_public.agent_availability
  for each row when (NEW.status = 'available' and NEW.current_load < NEW.max_capacity)
  execute function app_private.tg_agent_availability__enqueue_queue_drain();
create trigger _900_enqueue_queue_drain_on_update after update on app_public.agent_availability
  for each row
  when (NEW.status = 'available' and NEW.current_load < NEW.max_capacity
        and (OLD.status <> 'available' or NEW.current_load < OLD.current_load or NEW.max_capacity > OLD.max_capacity))
  execute function app_private.tg_agent_availability__enqueue_queue_drain();

create function app_private.tg_availability_slots__enqueue_queue_drain() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.enqueue_queue_drain(NEW.tenant_id);
  return null;
end;
$$;
comment on function app_private.tg_availability_slots__enqueue_queue_drain() is 'AFTER trigger on availability_slots: a slot became free (created free, unblocked, unbooked or its lock released), so waiting leads are re-routed (routing__drain_queue).';
create trigger _900_enqueue_queue_drain_on_insert after insert on app_public.availability_slots
  for each row when (NEW.status = 'free' and NEW.locked_by_lead_id is null)
  execute function app_private.tg_availability_slots__enqueue_queue_drain();
create trigger _900_enqueue_queue_drain_on_update after update on app_public.availability_slots
  for each row
  when (NEW.status = 'free' and NEW.locked_by_lead_id is null
        and (OLD.status <> 'free' or OLD.locked_by_lead_id is not null))
  execute function app_private.tg_availability_slots__enqueue_queue_drain();

create function app_private.tg_agents__enqueue_queue_drain() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.enqueue_queue_drain(NEW.tenant_id);
  return null;
end;
$$;
comment on function app_private.tg_agents__enqueue_queue_drain() is 'AFTER trigger on agents: an agent was reactivated (is_active false to true), so waiting leads are re-routed (routing__drain_queue).';
create trigger _900_enqueue_queue_drain after update of is_active on app_public.agents
  for each row when (NEW.is_active and not OLD.is_active)
  execute function app_private.tg_agents__enqueue_queue_drain();

--------------------------------------------------------------------------------
-- SLA escalation
--------------------------------------------------------------------------------

create function app_private.escalate_expired_queue_entries() returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_entry app_public.assignment_queue;
  v_sla_seconds numeric;
  v_new_id uuid;
  v_history_id bigint;
  v_outcome text;
  v_count int := 0;
begin
  for v_entry in
    select q.* from app_public.assignment_queue q
     where q.dequeued_at is null and q.escalated_at is null and q.sla_expires_at <= pg_catalog.now()
     order by q.sla_expires_at, q.id
     for update skip locked
  loop
    select case when c.value_type = 'number' and (c.value #>> '{}')::numeric > 0 then (c.value #>> '{}')::numeric end
      into v_sla_seconds
      from app_public.system_config c
     where c.tenant_id = v_entry.tenant_id and c.key = 'routing.sla_seconds.reassignment';
    update app_public.assignment_queue q
       set escalated_at = pg_catalog.now(), dequeued_at = pg_catalog.now(), dequeue_reason = 'escalated'
     where q.id = v_entry.id;
    insert into app_public.assignment_queue (tenant_id, lead_id, queue_type, priority, lead_score, enqueued_at, sla_expires_at)
    select v_entry.tenant_id, v_entry.lead_id, 'reassignment', v_entry.priority + 10, coalesce(l.lead_score, v_entry.lead_score),
           v_entry.enqueued_at, pg_catalog.now() + pg_catalog.make_interval(secs => coalesce(v_sla_seconds, 600))
      from app_public.leads l where l.tenant_id = v_entry.tenant_id and l.id = v_entry.lead_id
    returning id into v_new_id;
    insert into app_public.routing_events (tenant_id, lead_id, event_type, data)
    values (v_entry.tenant_id, v_entry.lead_id, 'escalated',
            pg_catalog.jsonb_build_object('from_queue', v_entry.queue_type, 'to_queue', 'reassignment',
              'priority', v_entry.priority + 10, 'sla_expired_at', v_entry.sla_expires_at,
              'waited_seconds', pg_catalog.round(extract(epoch from pg_catalog.now() - v_entry.enqueued_at)),
              'queue_entry_id', v_new_id));
    v_count := v_count + 1;
    -- Try again with a wider candidate set (route_lead decides what escalation widens). A failure
    -- here must not undo the escalation nor stop the others: it is logged and the entry waits.
    begin
      v_history_id := app_private.route_lead(v_entry.tenant_id, v_entry.lead_id, 'escalation');
      v_outcome := app_private.routing_outcome(v_history_id);
      if v_outcome in ('offered', 'assigned', 'not_routed') then
        update app_public.assignment_queue q
           set dequeued_at = pg_catalog.now(), dequeue_reason = case when v_outcome = 'not_routed' then 'cancelled' else 'routed' end
         where q.tenant_id = v_entry.tenant_id and q.lead_id = v_entry.lead_id and q.dequeued_at is null;
      end if;
    exception when others then
      raise warning 'routing of escalated lead % failed: % (%)', v_entry.lead_id, sqlerrm, sqlstate;
    end;
  end loop;
  return v_count;
end;
$$;
comment on function app_private.escalate_expired_queue_entries() is 'For every waiting queue entry whose SLA has expired (sla_expires_at <= now()) and that was not escalated: the entry is closed (escalated_at, dequeue_reason escalated) and the lead moves to the reassignment queue with priority + 10, its original enqueued_at (its age) and a new SLA (system_config routing.sla_seconds.reassignment, default 600 s); routing_events gets "escalated"; then the lead is routed again with trigger escalation (left the queue when that offers or assigns it). A reassignment entry whose SLA expires is escalated again. Returns the number of entries escalated. Run every minute by the cron task routing__escalate.';

--------------------------------------------------------------------------------
-- Expired slot locks
--------------------------------------------------------------------------------

create function app_private.release_expired_slot_locks() returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count int;
begin
  with expired as (
    select s.id, s.locked_until as old_until, s.locked_by_lead_id as old_lead from app_public.availability_slots s
     where s.locked_until <= pg_catalog.now()
     for update skip locked
  ), released as (
    update app_public.availability_slots s
       set locked_until = null, locked_by_lead_id = null
      from expired e
     where s.id = e.id
    returning s.tenant_id, s.agent_id, s.id, e.old_until, e.old_lead
  ), events as (
    insert into app_public.routing_events (tenant_id, lead_id, agent_id, event_type, data)
    select r.tenant_id, r.old_lead, r.agent_id, 'lock_expired',
           pg_catalog.jsonb_build_object('slot_id', r.id, 'locked_until', r.old_until)
      from released r
    returning 1
  )
  select pg_catalog.count(*)::int into v_count from events;
  return v_count;
end;
$$;
comment on function app_private.release_expired_slot_locks() is 'Clears calendar slot locks whose locked_until has passed (readers already treat them as free) and writes a "lock_expired" routing event for each. Slots being changed right now are skipped until the next run. Returns the number of locks cleared. Run every 5 minutes by the cron task routing__release_locks.';

--------------------------------------------------------------------------------
-- Automatic routing of new leads: system_config routing.auto_route = off (default) | inline | job
--------------------------------------------------------------------------------

create function app_private.tg_system_config__validate_auto_route() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if NEW.value_type is distinct from 'string' or (NEW.value #>> '{}') not in ('off', 'inline', 'job') then
    raise exception 'routing.auto_route must be the string "off", "inline" or "job"' using errcode = '22023';
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_system_config__validate_auto_route() is 'Trigger (before insert or update of system_config key routing.auto_route): raises 22023 unless the value is the string off, inline or job.';
create trigger _200_validate_auto_route before insert or update on app_public.system_config
  for each row when (NEW.key = 'routing.auto_route')
  execute function app_private.tg_system_config__validate_auto_route();

create function app_private.auto_route_mode(tenant_id uuid) returns text
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce((select c.value #>> '{}' from app_public.system_config c
                    where c.tenant_id = auto_route_mode.tenant_id and c.key = 'routing.auto_route'), 'off');
$$;
comment on function app_private.auto_route_mode(uuid) is 'The tenant''s system_config routing.auto_route: off (the default, also when unset), inline or job.';

create function app_private.tg_leads__auto_route() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if NEW.deleted_at is not null then
    return null;
  end if;
  case app_private.auto_route_mode(NEW.tenant_id)
    when 'inline' then
      perform app_private.route_lead(NEW.tenant_id, NEW.id, 'new_lead');
    when 'job' then
      perform app_private.add_job('lead__route', pg_catalog.json_build_object('lead_id', NEW.id),
        job_key => 'lead_route:' || NEW.id::text);
    else
      null;
  end case;
  return null;
end;
$$;
comment on function app_private.tg_leads__auto_route() is 'AFTER INSERT trigger on leads (_910_auto_route): by the tenant''s system_config routing.auto_route, routes the new lead in the inserting transaction (inline: a routing error fails the insert), enqueues lead__route {lead_id} with job key lead_route:<lead_id> (job), or does nothing (off, the default).';
create trigger _910_auto_route after insert on app_public.leads
  for each row execute function app_private.tg_leads__auto_route();

grant execute on function
  app_public.accept_offer(uuid),
  app_public.reject_offer(uuid, text)
to :DATABASE_VISITOR;

--! split: 040-routing-config.sql
--------------------------------------------------------------------------------
-- Routing configuration: rule validation, A/B experiments of routing strategies (lifecycle,
-- sticky deterministic assignment, results with a two-proportion z-test), agent performance
-- metrics and city/event demand statistics (refreshed nightly by tasks).
-- Idempotent: drops what it creates. 010 recreates its tables on every run, which already drops
-- the triggers on them and the functions that take their row types.
--------------------------------------------------------------------------------

drop function if exists app_public.routing_experiment_results(app_public.routing_experiments);
drop type if exists app_public.routing_experiment_result_row cascade;
drop function if exists app_private.refresh_city_event_stats(uuid);
drop function if exists app_private.refresh_agent_performance_metrics(uuid);
drop function if exists app_private.experiment_variant_for_lead(uuid, uuid);
drop function if exists app_public.declare_routing_experiment_winner(uuid, uuid);
drop function if exists app_public.stop_routing_experiment(uuid);
drop function if exists app_public.start_routing_experiment(uuid);
drop function if exists app_private.tg_routing_experiment_variants__lock_while_running() cascade;
drop function if exists app_private.tg_routing_experiment_variants__validate() cascade;
drop function if exists app_private.tg_routing_rules__validate() cascade;
drop function if exists app_hidden.validate_strategy_params(text, jsonb, text);
drop function if exists app_hidden.two_proportion_p_value(bigint, bigint, bigint, bigint);
drop function if exists app_hidden.erfc(double precision);

--------------------------------------------------------------------------------
-- Strategy parameters
--------------------------------------------------------------------------------

create function app_hidden.validate_strategy_params(strategy text, params jsonb, field text) returns void
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  -- The parameters each strategy understands; anything else is refused.
  v_allowed text[] := case strategy
    when 'score_tiered' then array['hot_threshold']
    when 'weighted_round_robin' then array[]::text[]
    when 'least_loaded' then array[]::text[]
    when 'direct_to_owner' then array[]::text[]
    else array[]::text[]
  end;
  v_key text;
  v_value jsonb;
  v_number numeric;
begin
  if params is null or pg_catalog.jsonb_typeof(params) <> 'object' then
    raise exception '% must be a JSON object', field using errcode = '22023';
  end if;
  if strategy is null then
    if params <> '{}'::jsonb then
      raise exception '% must be empty ({}) when there is no strategy', field using errcode = '22023';
    end if;
    return;
  end if;
  for v_key, v_value in select e.key, e.value from pg_catalog.jsonb_each(params) e order by e.key loop
    if not (v_key = any (v_allowed)) then
      raise exception 'Unknown parameter ''%'' in % for strategy %. %',
        case when pg_catalog.length(v_key) > 60 then pg_catalog.left(v_key, 60) || '…' else v_key end, field, strategy,
        case when pg_catalog.cardinality(v_allowed) = 0 then 'This strategy takes no parameters.'
             else 'Allowed: ' || pg_catalog.array_to_string(v_allowed, ', ') end
        using errcode = '22023';
    end if;
    v_number := case when pg_catalog.jsonb_typeof(v_value) = 'number' then (v_value #>> '{}')::numeric end;
    case v_key
      when 'hot_threshold' then
        if v_number is null or v_number <> pg_catalog.trunc(v_number) or v_number not between 0 and 100 then
          raise exception 'Parameter ''hot_threshold'' in % must be a whole number from 0 to 100', field using errcode = '22023';
        end if;
    end case;
  end loop;
end;
$$;
comment on function app_hidden.validate_strategy_params(text, jsonb, text) is $$Raises 22023 naming the parameter (and field, e.g. strategy_params) unless params are valid for the strategy:
score_tiered {"hot_threshold": whole number 0-100 (the engine's default is 70)};
weighted_round_robin, least_loaded, best_match and direct_to_owner take no parameters (the engine, 020, reads no others). Unknown keys are refused. Without a strategy params must be {}.$$;

--------------------------------------------------------------------------------
-- Rule validation
--------------------------------------------------------------------------------

create function app_private.tg_routing_rules__validate() returns trigger
  language plpgsql volatile
  -- SECURITY INVOKER on purpose: a member only ever sees (and so can only name) their own tenant's agents.
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_unknown uuid;
begin
  -- The lead filter language of find_leads; raises 22023 with the parser's message (e.g. an unknown field).
  perform app_hidden.parse_lead_filter(NEW.conditions);

  -- Checked when agent_ids change (an agent deleted later does not block editing the rule's other fields).
  if TG_OP = 'INSERT' or NEW.agent_ids is distinct from OLD.agent_ids then
    select a into v_unknown
      from pg_catalog.unnest(NEW.agent_ids) with ordinality u(a, o)
     where a is null or not exists (select 1 from app_public.agents g where g.tenant_id = NEW.tenant_id and g.id = u.a)
     order by o
     limit 1;
  end if;
  if found then
    raise exception 'Unknown agent % in agent_ids: every agent must be an agent of this tenant', coalesce(v_unknown::text, 'null')
      using errcode = '22023';
  end if;
  if pg_catalog.cardinality(NEW.agent_ids) <> (select pg_catalog.count(distinct a) from pg_catalog.unnest(NEW.agent_ids) a) then
    raise exception 'agent_ids must not name an agent twice' using errcode = '22023';
  end if;

  perform app_hidden.validate_strategy_params(NEW.strategy, NEW.strategy_params, 'strategy_params');
  return NEW;
end;
$$;
comment on function app_private.tg_routing_rules__validate() is 'Trigger (_200_validate, before insert or update on routing_rules): conditions must be a valid lead filter (parse_lead_filter''s 22023 message), every agent_ids entry an agent of the rule''s tenant (22023 naming the id), strategy_params valid for the strategy (validate_strategy_params).';

create trigger _200_validate before insert or update on app_public.routing_rules
  for each row execute function app_private.tg_routing_rules__validate();

--------------------------------------------------------------------------------
-- Experiments: variants
--------------------------------------------------------------------------------

create function app_private.tg_routing_experiment_variants__validate() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_hidden.validate_strategy_params(NEW.strategy, NEW.parameters, 'parameters');
  return NEW;
end;
$$;
comment on function app_private.tg_routing_experiment_variants__validate() is 'Trigger (_200_validate on routing_experiment_variants): parameters must be valid for the variant''s strategy (22023).';

create function app_private.tg_routing_experiment_variants__lock_while_running() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row app_public.routing_experiment_variants := case when TG_OP = 'DELETE' then OLD else NEW end;
  v_name text;
begin
  -- A deleted experiment (cascade) is no longer found here, so its variants go with it.
  select e.name into v_name from app_public.routing_experiments e
   where e.tenant_id = v_row.tenant_id and e.id = v_row.experiment_id and e.status = 'running';
  if found then
    raise exception 'The variants of experiment "%" cannot be changed while it is running; stop it first', v_name
      using errcode = '22023';
  end if;
  if TG_OP = 'DELETE' then
    return OLD;
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_routing_experiment_variants__lock_while_running() is 'Trigger (_060_lock_while_running on routing_experiment_variants): variants of a running experiment cannot be added, changed or deleted (22023), so leads already assigned keep meaning the same thing.';

create trigger _060_lock_while_running before insert or update or delete on app_public.routing_experiment_variants
  for each row execute function app_private.tg_routing_experiment_variants__lock_while_running();
create trigger _200_validate before insert or update on app_public.routing_experiment_variants
  for each row execute function app_private.tg_routing_experiment_variants__validate();

--------------------------------------------------------------------------------
-- Experiments: lifecycle
--------------------------------------------------------------------------------

create function app_public.start_routing_experiment(experiment_id uuid) returns app_public.routing_experiments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_manager('start routing experiments');
  v_experiment app_public.routing_experiments;
  v_running text;
  v_variants int;
  v_controls int;
  v_total numeric;
begin
  select e.* into v_experiment from app_public.routing_experiments e
   where e.tenant_id = v_tenant_id and e.id = start_routing_experiment.experiment_id
   for update;
  if not found then
    raise exception 'Routing experiment not found' using errcode = 'P0002';
  end if;
  if v_experiment.status <> 'draft' then
    raise exception 'Only a draft experiment can be started; "%" is %', v_experiment.name, v_experiment.status using errcode = '22023';
  end if;
  -- Lock the variants so none changes between these checks and the start.
  select pg_catalog.count(*)::int, pg_catalog.count(*) filter (where v.is_control)::int, coalesce(pg_catalog.sum(v.traffic_allocation), 0)
    into v_variants, v_controls, v_total
    from (select * from app_public.routing_experiment_variants v
           where v.tenant_id = v_tenant_id and v.experiment_id = v_experiment.id for update) v;
  if v_variants < 2 then
    raise exception 'An experiment needs at least two variants to start; "%" has %', v_experiment.name, v_variants using errcode = '22023';
  end if;
  if v_controls <> 1 then
    raise exception 'An experiment needs exactly one control variant (is_control) to start; "%" has none', v_experiment.name using errcode = '22023';
  end if;
  if v_total <> 100 then
    raise exception 'Traffic allocations add up to %, they must add up to 100', pg_catalog.trim_scale(v_total) using errcode = '22023';
  end if;
  select e.name into v_running from app_public.routing_experiments e
   where e.tenant_id = v_tenant_id and e.status = 'running' and e.id <> v_experiment.id;
  if found then
    raise exception 'Experiment "%" is already running; only one experiment can run at a time, stop it first', v_running
      using errcode = '23505';
  end if;
  begin
    update app_public.routing_experiments e
       set status = 'running', started_at = pg_catalog.now(), stopped_at = null
     where e.tenant_id = v_tenant_id and e.id = v_experiment.id
    returning e.* into v_experiment;
  exception when unique_violation then
    -- Another experiment started at the same moment (routing_experiments_one_running_per_tenant).
    raise exception 'Another experiment is already running; only one experiment can run at a time, stop it first'
      using errcode = '23505';
  end;
  return v_experiment;
end;
$$;
comment on function app_public.start_routing_experiment(uuid) is 'Starts a draft experiment (managers and up): it needs at least two variants, exactly one control, and allocations adding up to exactly 100 (22023 otherwise, e.g. "Traffic allocations add up to 90, they must add up to 100"); only one experiment runs per tenant (23505). From now on new leads are assigned to its variants.';

create function app_public.stop_routing_experiment(experiment_id uuid) returns app_public.routing_experiments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_manager('stop routing experiments');
  v_experiment app_public.routing_experiments;
begin
  select e.* into v_experiment from app_public.routing_experiments e
   where e.tenant_id = v_tenant_id and e.id = stop_routing_experiment.experiment_id
   for update;
  if not found then
    raise exception 'Routing experiment not found' using errcode = 'P0002';
  end if;
  if v_experiment.status <> 'running' then
    raise exception 'Only a running experiment can be stopped; "%" is %', v_experiment.name, v_experiment.status using errcode = '22023';
  end if;
  update app_public.routing_experiments e
     set status = 'stopped', stopped_at = pg_catalog.now()
   where e.tenant_id = v_tenant_id and e.id = v_experiment.id
  returning e.* into v_experiment;
  return v_experiment;
end;
$$;
comment on function app_public.stop_routing_experiment(uuid) is 'Stops a running experiment (managers and up; 22023 if it is not running). Its leads are routed normally again; the results stay.';

create function app_public.declare_routing_experiment_winner(experiment_id uuid, variant_id uuid) returns app_public.routing_experiments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_manager('declare the winner of routing experiments');
  v_experiment app_public.routing_experiments;
begin
  select e.* into v_experiment from app_public.routing_experiments e
   where e.tenant_id = v_tenant_id and e.id = declare_routing_experiment_winner.experiment_id
   for update;
  if not found then
    raise exception 'Routing experiment not found' using errcode = 'P0002';
  end if;
  if v_experiment.status not in ('running', 'stopped') then
    raise exception 'A winner can only be declared for a running or stopped experiment; "%" is %', v_experiment.name, v_experiment.status
      using errcode = '22023';
  end if;
  if not exists (select 1 from app_public.routing_experiment_variants v
                  where v.tenant_id = v_tenant_id and v.experiment_id = v_experiment.id
                    and v.id = declare_routing_experiment_winner.variant_id) then
    raise exception 'Variant % is not a variant of experiment "%"', declare_routing_experiment_winner.variant_id, v_experiment.name
      using errcode = '22023';
  end if;
  update app_public.routing_experiments e
     set status = 'completed', winner_variant_id = declare_routing_experiment_winner.variant_id,
         stopped_at = coalesce(e.stopped_at, pg_catalog.now())
   where e.tenant_id = v_tenant_id and e.id = v_experiment.id
  returning e.* into v_experiment;
  return v_experiment;
end;
$$;
comment on function app_public.declare_routing_experiment_winner(uuid, uuid) is 'Ends a running or stopped experiment with a winner (managers and up): status completed, winner_variant_id set (22023 when the variant belongs to another experiment).';

--------------------------------------------------------------------------------
-- Experiments: sticky, deterministic assignment of leads to variants
--------------------------------------------------------------------------------

-- Created only when missing: the engine core (020, earlier in the file) may use the type, and
-- dropping it would drop those functions too. Change its shape by dropping it by hand.
do $$
begin
  if pg_catalog.to_regtype('app_public.experiment_choice') is null then
    create type app_public.experiment_choice as (experiment_id uuid, variant_id uuid, strategy text, parameters jsonb);
    comment on type app_public.experiment_choice is 'The experiment variant a lead is routed with: experiment, variant, and the variant''s strategy and parameters.';
  end if;
end;
$$;

create function app_private.experiment_variant_for_lead(tenant_id uuid, lead_id uuid) returns app_public.experiment_choice
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_choice app_public.experiment_choice;
  v_experiment_id uuid;
  v_point numeric;
begin
  -- Sticky: a lead keeps its variant while the experiment runs; once it stopped, no variant.
  select a.experiment_id, a.variant_id, v.strategy, v.parameters into v_choice
    from app_public.lead_experiment_assignments a
    join app_public.routing_experiments e on e.tenant_id = a.tenant_id and e.id = a.experiment_id
    join app_public.routing_experiment_variants v on v.tenant_id = a.tenant_id and v.id = a.variant_id
   where a.tenant_id = experiment_variant_for_lead.tenant_id and a.lead_id = experiment_variant_for_lead.lead_id;
  if found then
    return case when exists (select 1 from app_public.routing_experiments e
                              where e.tenant_id = experiment_variant_for_lead.tenant_id and e.id = v_choice.experiment_id
                                and e.status = 'running') then v_choice end;
  end if;

  -- FOR SHARE: a concurrent stop waits until this assignment is committed.
  select e.id into v_experiment_id from app_public.routing_experiments e
   where e.tenant_id = experiment_variant_for_lead.tenant_id and e.status = 'running'
   for share;
  if not found then
    return null;
  end if;
  if not exists (select 1 from app_public.leads l
                  where l.tenant_id = experiment_variant_for_lead.tenant_id and l.id = experiment_variant_for_lead.lead_id) then
    raise exception 'Lead not found' using errcode = 'P0002';
  end if;

  -- A point in [0, 100) from the first 60 bits of md5(experiment id, lead id): uniform, reproducible,
  -- and independent between experiments. The variant whose cumulative allocation band holds it wins.
  v_point := ('x' || pg_catalog.substr(pg_catalog.md5(v_experiment_id::text || ':' || experiment_variant_for_lead.lead_id::text), 1, 15))
               ::bit(60)::bigint::numeric * 100 / 1152921504606846976;  -- 2^60
  select v_experiment_id, b.id, b.strategy, b.parameters into v_choice
    from (select v.id, v.strategy, v.parameters,
                 pg_catalog.sum(v.traffic_allocation) over (order by v.is_control desc, v.name, v.id) as upper_bound
            from app_public.routing_experiment_variants v
           where v.tenant_id = experiment_variant_for_lead.tenant_id and v.experiment_id = v_experiment_id) b
   where b.upper_bound > v_point
   order by b.upper_bound
   limit 1;
  if not found then
    return null;  -- unreachable: a running experiment's allocations add up to 100
  end if;

  insert into app_public.lead_experiment_assignments (tenant_id, lead_id, experiment_id, variant_id)
  values (experiment_variant_for_lead.tenant_id, experiment_variant_for_lead.lead_id, v_choice.experiment_id, v_choice.variant_id)
  on conflict do nothing;
  if not found then
    -- Assigned concurrently by another transaction (now committed): use that one.
    select a.experiment_id, a.variant_id, v.strategy, v.parameters into v_choice
      from app_public.lead_experiment_assignments a
      join app_public.routing_experiment_variants v on v.tenant_id = a.tenant_id and v.id = a.variant_id
     where a.tenant_id = experiment_variant_for_lead.tenant_id and a.lead_id = experiment_variant_for_lead.lead_id;
    if v_choice.experiment_id is distinct from v_experiment_id then
      return null;
    end if;
  end if;
  return v_choice;
end;
$$;
comment on function app_private.experiment_variant_for_lead(uuid, uuid) is $$The variant a lead is routed with, or null when no experiment runs. Sticky: a lead already assigned (lead_experiment_assignments) keeps its variant while that experiment runs, and gets null once it stopped. Otherwise, while an experiment runs, the variant is chosen deterministically: md5(experiment id || ':' || lead id) gives a uniform point in [0, 100), matched against the cumulative traffic allocations (control first, then by name), so the split is exact in expectation and reproducible; the assignment is inserted (on conflict do nothing, then re-read, so concurrent callers agree). P0002 for an unknown lead.$$;

--------------------------------------------------------------------------------
-- Experiments: results with a two-proportion z-test
--------------------------------------------------------------------------------

create function app_hidden.erfc(x double precision) returns double precision
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  -- Complementary error function, Chebyshev-fitted rational approximation (Numerical Recipes, erfcc):
  -- fractional error below 1.2e-7 everywhere, in the far tails too (unlike Abramowitz-Stegun 7.1.26,
  -- whose 1.5e-7 bound is absolute). erfc(-x) = 2 - erfc(x).
  select case when x >= 0 then r else 2 - r end
    from (select t * pg_catalog.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
               + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
               + t * (-0.82215223 + t * 0.17087277))))))))) as r
            from (select z, 1.0 / (1.0 + 0.5 * z) as t from (select pg_catalog.abs(x) as z) a) b) c;
$$;
comment on function app_hidden.erfc(double precision) is 'Complementary error function erfc(x) = 1 - erf(x), by the Numerical Recipes Chebyshev approximation (fractional error < 1.2e-7 for every x). The standard normal upper tail is erfc(z / sqrt(2)) / 2.';

create function app_hidden.two_proportion_p_value(x1 bigint, n1 bigint, x2 bigint, n2 bigint) returns double precision
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  -- Pooled two-proportion z-test, two-sided: p = (x1 + x2) / (n1 + n2),
  -- z = (x1/n1 - x2/n2) / sqrt(p (1 - p) (1/n1 + 1/n2)), p-value = 2 (1 - Phi(|z|)) = erfc(|z| / sqrt 2).
  select case
    when n1 > 0 and n2 > 0 and x1 + x2 > 0 and x1 + x2 < n1 + n2 then
      app_hidden.erfc(pg_catalog.abs(x1::double precision / n1 - x2::double precision / n2)
        / pg_catalog.sqrt(((x1 + x2)::double precision / (n1 + n2)) * (1 - (x1 + x2)::double precision / (n1 + n2))
                          * (1.0 / n1 + 1.0 / n2))
        / pg_catalog.sqrt(2.0))
  end;
$$;
comment on function app_hidden.two_proportion_p_value(bigint, bigint, bigint, bigint) is 'Two-sided p-value of the pooled two-proportion z-test of x1/n1 against x2/n2; null when a sample is empty or the pooled rate is 0 or 1 (no variance).';

create type app_public.routing_experiment_result_row as (
  variant_id uuid,
  variant_name text,
  is_control boolean,
  strategy text,
  traffic_allocation numeric,
  leads int,
  contacted int,
  qualified int,
  converted int,
  contact_rate numeric,
  qualification_rate numeric,
  conversion_rate numeric,
  p_value double precision
);
comment on type app_public.routing_experiment_result_row is 'One variant''s results in an experiment.';
comment on column app_public.routing_experiment_result_row.variant_id is 'The variant.';
comment on column app_public.routing_experiment_result_row.variant_name is 'Its name.';
comment on column app_public.routing_experiment_result_row.is_control is 'True for the control.';
comment on column app_public.routing_experiment_result_row.strategy is 'Its strategy.';
comment on column app_public.routing_experiment_result_row.traffic_allocation is 'Its share of the traffic, in percent.';
comment on column app_public.routing_experiment_result_row.leads is 'Leads assigned to it (not deleted).';
comment on column app_public.routing_experiment_result_row.contacted is 'Of those, leads that reached contacted or a later stage (funnel stage 2 or more, now or ever).';
comment on column app_public.routing_experiment_result_row.qualified is 'Of those, leads that reached qualified or later (stage 3 or more, now or ever).';
comment on column app_public.routing_experiment_result_row.converted is 'Of those, leads won now (status outcome won).';
comment on column app_public.routing_experiment_result_row.contact_rate is 'contacted / leads (0 to 1).';
comment on column app_public.routing_experiment_result_row.qualification_rate is 'qualified / leads (0 to 1).';
comment on column app_public.routing_experiment_result_row.conversion_rate is 'converted / leads (0 to 1).';
comment on column app_public.routing_experiment_result_row.p_value is 'Two-sided p-value of the two-proportion z-test of this conversion rate against the control''s; null for the control, or when either has no leads or the pooled rate is 0 or 1.';

create function app_public.routing_experiment_results(experiment app_public.routing_experiments)
  returns setof app_public.routing_experiment_result_row
  language sql stable
  -- SECURITY INVOKER: row-level security keeps every tenant to its own experiments.
  set search_path to pg_catalog, public, pg_temp
as $$
  with per_lead as (
    select a.variant_id, l.id,
           greatest(coalesce(cs.stage_order, 0),
                    coalesce((select pg_catalog.max(hs.stage_order)
                                from app_public.lead_status_history h
                                join app_public.lead_statuses hs on hs.status = h.to_status
                               where h.tenant_id = l.tenant_id and h.lead_id = l.id), 0)) as best_stage,
           cs.outcome = 'won' as won
      from app_public.lead_experiment_assignments a
      join app_public.leads l on l.tenant_id = a.tenant_id and l.id = a.lead_id and l.deleted_at is null
      join app_public.lead_statuses cs on cs.status = l.status
     where a.tenant_id = experiment.tenant_id and a.experiment_id = experiment.id
  ), counts as (
    select v.id, v.name, v.is_control, v.strategy, v.traffic_allocation,
           pg_catalog.count(p.id)::int as leads,
           pg_catalog.count(p.id) filter (where p.best_stage >= 2)::int as contacted,
           pg_catalog.count(p.id) filter (where p.best_stage >= 3)::int as qualified,
           pg_catalog.count(p.id) filter (where p.won)::int as converted
      from app_public.routing_experiment_variants v
      left join per_lead p on p.variant_id = v.id
     where v.tenant_id = experiment.tenant_id and v.experiment_id = experiment.id
     group by v.id, v.name, v.is_control, v.strategy, v.traffic_allocation
  )
  select c.id, c.name, c.is_control, c.strategy, c.traffic_allocation, c.leads, c.contacted, c.qualified, c.converted,
         pg_catalog.round(c.contacted::numeric / nullif(c.leads, 0), 4),
         pg_catalog.round(c.qualified::numeric / nullif(c.leads, 0), 4),
         pg_catalog.round(c.converted::numeric / nullif(c.leads, 0), 4),
         case when not c.is_control then
           app_hidden.two_proportion_p_value(c.converted, c.leads, ctl.converted, ctl.leads)
         end
    from counts c
    left join counts ctl on ctl.is_control
   order by c.is_control desc, c.name;
$$;
comment on function app_public.routing_experiment_results(app_public.routing_experiments) is 'The experiment''s results per variant (control first): leads, how many were contacted, qualified and converted (won), the rates, and the two-sided p-value of a pooled two-proportion z-test of each variant''s conversion rate against the control''s (normal tail by app_hidden.erfc; null for the control or when a count is 0). Soft-deleted leads are left out.';

--------------------------------------------------------------------------------
-- Agent performance metrics
--------------------------------------------------------------------------------

create function app_private.refresh_agent_performance_metrics(tenant_id uuid) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_timezone text := coalesce(
    (select bs.timezone from app_public.business_settings bs where bs.tenant_id = refresh_agent_performance_metrics.tenant_id), 'UTC');
  v_today date := (pg_catalog.now() at time zone v_timezone)::date;
  v_count int;
begin
  with periods (period, period_start, period_end) as (
    -- Current and previous day, ISO week (Monday) and month, as local dates of the tenant.
    select p.period, p.start_date, (p.start_date + p.length)::date
      from (values
        ('day', v_today, interval '1 day'),
        ('day', v_today - 1, interval '1 day'),
        ('week', pg_catalog.date_trunc('week', v_today)::date, interval '7 days'),
        ('week', pg_catalog.date_trunc('week', v_today)::date - 7, interval '7 days'),
        ('month', pg_catalog.date_trunc('month', v_today)::date, interval '1 month'),
        ('month', (pg_catalog.date_trunc('month', v_today) - interval '1 month')::date, interval '1 month')
      ) p (period, start_date, length)
  ), bounds as (
    select p.period, p.period_start,
           p.period_start::timestamp at time zone v_timezone as from_at,
           p.period_end::timestamp at time zone v_timezone as to_at
      from periods p
  ), assigned as (
    -- Each lead once per agent and period: its first assignment to the agent in the period, with the
    -- lead's score at that moment (the last score recorded before it; a lead starts at 0).
    select distinct on (b.period, b.period_start, la.to_agent_id, la.lead_id)
           b.period, b.period_start, la.to_agent_id as agent_id, la.lead_id,
           coalesce((select sh.score from app_public.lead_score_history sh
                      where sh.tenant_id = la.tenant_id and sh.lead_id = la.lead_id and sh.calculated_at <= la.assigned_at
                      order by sh.calculated_at desc, sh.id desc limit 1), 0) as score,
           coalesce(ls.outcome = 'won', false) as won
      from bounds b
      join app_public.lead_assignments la
        on la.tenant_id = refresh_agent_performance_metrics.tenant_id and la.to_agent_id is not null
       and la.assigned_at >= b.from_at and la.assigned_at < b.to_at
      join app_public.leads l on l.tenant_id = la.tenant_id and l.id = la.lead_id
      join app_public.lead_statuses ls on ls.status = l.status
     order by b.period, b.period_start, la.to_agent_id, la.lead_id, la.assigned_at
  ), lead_stats as (
    select a.period, a.period_start, a.agent_id,
           pg_catalog.count(*)::int as leads_assigned,
           pg_catalog.count(*) filter (where a.won)::int as leads_converted,
           pg_catalog.round((pg_catalog.count(*) filter (where a.won and a.score >= 70))::numeric
             / nullif(pg_catalog.count(*) filter (where a.score >= 70), 0), 4) as hot,
           pg_catalog.round((pg_catalog.count(*) filter (where a.won and a.score between 40 and 69))::numeric
             / nullif(pg_catalog.count(*) filter (where a.score between 40 and 69), 0), 4) as warm,
           pg_catalog.round((pg_catalog.count(*) filter (where a.won and a.score < 40))::numeric
             / nullif(pg_catalog.count(*) filter (where a.score < 40), 0), 4) as cold
      from assigned a
     group by a.period, a.period_start, a.agent_id
  ), handling as (
    -- Offer to acceptance, for offers made in the period and accepted.
    select b.period, b.period_start, o.agent_id,
           pg_catalog.round(pg_catalog.avg(extract(epoch from o.responded_at - o.offered_at)))::int as seconds
      from bounds b
      join app_public.routing_offers o
        on o.tenant_id = refresh_agent_performance_metrics.tenant_id and o.status = 'accepted' and o.responded_at is not null
       and o.offered_at >= b.from_at and o.offered_at < b.to_at
     group by b.period, b.period_start, o.agent_id
  ), upserted as (
    insert into app_public.agent_performance_metrics as m (tenant_id, agent_id, period, period_start, leads_assigned, leads_converted,
      conversion_rate_hot, conversion_rate_warm, conversion_rate_cold, avg_handling_seconds, computed_at)
    select refresh_agent_performance_metrics.tenant_id, g.id, b.period, b.period_start,
           coalesce(s.leads_assigned, 0), coalesce(s.leads_converted, 0), s.hot, s.warm, s.cold, h.seconds, pg_catalog.now()
      from app_public.agents g
     cross join bounds b
      left join lead_stats s on s.agent_id = g.id and s.period = b.period and s.period_start = b.period_start
      left join handling h on h.agent_id = g.id and h.period = b.period and h.period_start = b.period_start
     where g.tenant_id = refresh_agent_performance_metrics.tenant_id
    on conflict on constraint agent_performance_metrics_must_be_unique_per_agent_and_period do update
      set leads_assigned = excluded.leads_assigned, leads_converted = excluded.leads_converted,
          conversion_rate_hot = excluded.conversion_rate_hot, conversion_rate_warm = excluded.conversion_rate_warm,
          conversion_rate_cold = excluded.conversion_rate_cold, avg_handling_seconds = excluded.avg_handling_seconds,
          computed_at = excluded.computed_at
    returning 1
  )
  select pg_catalog.count(*)::int into v_count from upserted;
  return v_count;
end;
$$;
comment on function app_private.refresh_agent_performance_metrics(uuid) is $$Recomputes agent_performance_metrics for every agent of the tenant for the current and previous day, ISO week and month (the tenant's local calendar): leads assigned to the agent in the period (lead_assignments.to_agent_id; each lead once), how many of them are won now, the conversion rate per tier of the lead's score at assignment (the last lead_score_history score before it, 0 if none: hot >= 70, warm 40-69, cold < 40; null when the tier is empty), and the average seconds from offer to acceptance (routing_offers accepted, offered in the period). Upserts; returns the number of rows written. satisfaction, cross_sell_rate and upsell_rate are left as they are. Run nightly by routing__refresh_metrics.$$;

--------------------------------------------------------------------------------
-- City event statistics
--------------------------------------------------------------------------------

create function app_private.refresh_city_event_stats(tenant_id uuid) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_timezone text := coalesce(
    (select bs.timezone from app_public.business_settings bs where bs.tenant_id = refresh_city_event_stats.tenant_id), 'UTC');
  v_count int;
begin
  with fresh as (
    select pg_catalog.initcap(pg_catalog.lower(pg_catalog.btrim(l.city))) as city,
           nullif(pg_catalog.upper(pg_catalog.btrim(l.region)), '') as region,
           pg_catalog.lower(pg_catalog.btrim(l.event_type)) as event_type,
           pg_catalog.date_trunc('month', l.created_at at time zone v_timezone)::date as period_start,
           pg_catalog.count(*)::int as leads,
           pg_catalog.count(*) filter (where ls.outcome = 'won')::int as booked,
           pg_catalog.round(pg_catalog.avg(l.estimated_value), 2) as avg_estimated_value
      from app_public.leads l
      join app_public.lead_statuses ls on ls.status = l.status
     where l.tenant_id = refresh_city_event_stats.tenant_id and l.deleted_at is null
       and nullif(pg_catalog.btrim(l.city), '') is not null and nullif(pg_catalog.btrim(l.event_type), '') is not null
     group by 1, 2, 3, 4
  ), upserted as (
    insert into app_public.city_event_stats as s (tenant_id, city, region, event_type, period_start, leads, booked, avg_estimated_value, computed_at)
    select refresh_city_event_stats.tenant_id, f.city, f.region, f.event_type, f.period_start, f.leads, f.booked, f.avg_estimated_value,
           pg_catalog.now()
      from fresh f
    on conflict on constraint city_event_stats_must_be_unique_per_city_event_and_month do update
      set leads = excluded.leads, booked = excluded.booked, avg_estimated_value = excluded.avg_estimated_value,
          computed_at = excluded.computed_at
    returning 1
  ), removed as (
    -- Combinations no live lead supports any more (leads deleted or edited).
    delete from app_public.city_event_stats s
     where s.tenant_id = refresh_city_event_stats.tenant_id
       and not exists (select 1 from fresh f
                        where f.city = s.city and f.region is not distinct from s.region
                          and f.event_type = s.event_type and f.period_start = s.period_start)
  )
  select pg_catalog.count(*)::int into v_count from upserted;
  return v_count;
end;
$$;
comment on function app_private.refresh_city_event_stats(uuid) is $$Recomputes the tenant's city_event_stats from its live leads that have a city and an event_type: per city (trimmed, capitalised as in initcap), region (upper case), event type (lower case) and month of creation (the tenant's local calendar): leads, booked (status outcome won) and average estimated value. Upserts every combination and deletes rows no lead supports any more; returns the number of rows written. Run nightly by routing__refresh_city_stats.$$;

--------------------------------------------------------------------------------
-- Grants
--------------------------------------------------------------------------------

grant execute on function
  app_hidden.validate_strategy_params(text, jsonb, text),
  app_hidden.erfc(double precision),
  app_hidden.two_proportion_p_value(bigint, bigint, bigint, bigint),
  app_public.start_routing_experiment(uuid),
  app_public.stop_routing_experiment(uuid),
  app_public.declare_routing_experiment_winner(uuid, uuid),
  app_public.routing_experiment_results(app_public.routing_experiments)
to :DATABASE_VISITOR;
